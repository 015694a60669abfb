"""The networks: ``backbones`` (the torchvision CNNs a learner trains, and their layers),
``learners`` (SimCLR, the paper's, and the others, in a registry: a new learner is one
decorated class), ``networks`` (the pretrained ImageNet networks that embed prototypes) and
``features`` (a frozen backbone's pooled features).

May import: engine, infra.
"""
