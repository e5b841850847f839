"""Choosing what to train on: coverage-aware selection of instruction data and cold-start selection of image-text
pairs (thesis ch. 3-4). The building blocks import only torch and numpy."""
