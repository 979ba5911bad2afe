"""HTTP front of sonicsort (Flask app factory, routes, OpenAPI). Built in the API issue."""
