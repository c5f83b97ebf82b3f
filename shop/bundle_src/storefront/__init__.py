"""Storefront of the sample shop: catalog, cart, checkout and order confirmation over HTTP."""
