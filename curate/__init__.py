"""Ray Data pipeline stages that turn web crawls into labeled, filtered documents."""
