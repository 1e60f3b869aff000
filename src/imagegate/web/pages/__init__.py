"""Server-rendered HTML pages: the playground and the model catalog."""
