"""The runtime (torch): closed-form integrals of compiled networks, training (single process or
torchrun + DDP), resumable run directories, checkpoints and safe file IO."""
