"""Models: the attention kinds, timm registration, building and loading checkpoints, the registry, training."""
