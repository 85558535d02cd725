"""Write a synthetic robot-command dataset in canonical form.

    python launch/generate_dataset.py --num-examples 4000 --seed 0 --output robot_dataset.json

Same as ``robolora data generate``.
"""

import sys

from robolora.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "generate", *sys.argv[1:]]))
