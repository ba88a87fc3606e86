"""The machine API's bodies and their conversion to domain inputs, below the web layer: the API and the
pull importer both validate with them."""
