"""Check dataset files and print every problem with its file, record and field.

    python launch/validate_dataset.py robot_train.json robot_val.json

Same as ``robolora data validate``.
"""

import sys

from robolora.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "validate", *sys.argv[1:]]))
