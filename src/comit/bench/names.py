"""What ``comit bench`` can measure, as plain names: the command's help reads them without importing torch."""

SECTIONS = ("peak", "forward", "tokenize", "detokenize", "fast_paths", "train", "dataset")
ATTENTION_MODES = ("hard", "released")
