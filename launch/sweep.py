"""Train several variants of one config concurrently (an ensemble sweep) on Ray Tune.

    python launch/sweep.py --config examples/sweep-smollm2.yaml --max-concurrent 2

Same flags and behaviour as ``robolora sweep``: one Ray Train run per variant, a comparison table,
``best/`` and the members' majority vote.
"""

import sys

from robolora.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
