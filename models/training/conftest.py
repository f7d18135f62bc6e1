# Makes `routeiq_training` importable when pytest runs from any directory.
