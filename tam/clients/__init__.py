"""One typed client per provider; all raise the `tam.errors` tree."""
