"""Models: the network, label hierarchy context, losses, output rules, training and the search."""
