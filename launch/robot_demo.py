"""Try a trained adapter: type robot commands, see the generated code and whether it is valid.

    python launch/robot_demo.py --lora-path ./models/robot-lora/checkpoint-500
    python launch/robot_demo.py --lora-path ./models/robot-lora --command "move forward 3 meters"

Same as ``robolora demo``.
"""

import sys

from robolora.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
