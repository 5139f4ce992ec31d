"""Bundle assembly: a replica and its image turned into an OCI bundle the runtime can run.

config.py writes config.json and the /etc files, rootfs.py mounts the image
layers (idmapped with a user namespace: idmap.py) under an overlay
(overlay.py), and takes them down again.
"""
