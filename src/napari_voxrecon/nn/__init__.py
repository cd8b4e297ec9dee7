"""Neural-network building blocks shared by the models (torch is imported here, not at package top)."""
