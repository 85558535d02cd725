"""Run a robolora command as a Ray Job on a running Ray cluster and follow its logs.

    python launch/submit_job.py --address http://HEAD:8265 -- train --config examples/codellama-7b.yaml \
        --output-dir /mnt/shared/robolora/codellama-7b

Same flags and behaviour as ``robolora submit``: uploads the working directory, authenticates with the
cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and exits with the job's
outcome (0 SUCCEEDED, 1 FAILED or STOPPED). See cluster/README.md.
"""

import sys

from robolora.cli import main

if __name__ == "__main__":
    sys.exit(main(["submit", *sys.argv[1:]]))
