"""Fine-tune a code LLM with LoRA on robot commands (the training guide's script).

    python launch/train_robot.py --data-json robot_dataset.json --output-dir ./models/robot-lora \
        --num-epochs 3 --batch-size 4 --learning-rate 1e-4

Same flags and behaviour as ``robolora train``: Ray Train workers running DeepSpeed ZeRO with PEFT.
"""

import sys

from robolora.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
