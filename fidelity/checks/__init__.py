"""One module per fidelity check; each ``run(ctx, ...)`` returns its table rows."""
