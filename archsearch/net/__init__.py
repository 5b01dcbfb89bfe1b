"""The network core: NetSpec (plain data), the op registry, costs, and the torch builder."""
