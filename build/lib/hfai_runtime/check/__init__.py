"""``hfai-runtime check``: what a cluster would refuse in a manifest, found before ``kubectl apply``.

``crds/`` holds the upstream CRDs the manifests are validated against (see ``crds/SOURCES.md``).
"""
