"""The node's image store (store.py) and `mctl image import` (importer.py, archive.py).

Independent of the runtime: images are directories of unpacked layers that
bundle assembly (agent/bundle/) stacks into a container's rootfs.
"""
