"""Networks: the translation generators (:mod:`.generators`) and brainchop's MeshNets with their
preprocessing (:mod:`.meshnet`: parcellation and brain masks)."""

from monai_t1t2.nets.generators import DEFAULT_GENERATOR, Generator, SliceWise, build_discriminator, build_generator

__all__ = ["DEFAULT_GENERATOR", "Generator", "SliceWise", "build_discriminator", "build_generator"]
