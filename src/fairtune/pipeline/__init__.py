"""``fairtune run RECIPE``: audit the base -> (align) -> build data -> train each arm -> audit and
red-team each tuned model -> compare -> report, every stage cached by the hash of its inputs."""
