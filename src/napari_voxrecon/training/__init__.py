"""The one training loop of the project and the training-data samplers."""
