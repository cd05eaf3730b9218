"""What AWS offers for GPU training: instance types, Deep Learning AMI, Deep Learning Container images.

The one place these facts live; `config.py` validates against it and `aws_gpu.py` builds from it.
Sources: aws.amazon.com/ec2/instance-types (g5, g6e, p3, p4, p5 pages; EFA support per size),
github.com/aws/deep-learning-containers available_images.md (registries, tags), as of 2025-11.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInstanceType:
    """One EC2 instance type with GPUs."""

    name: str
    gpu: str
    """GPU model, as `nvidia-smi` names its family: "A10G", "A100"."""
    gpus: int
    efa: bool
    """Whether the type takes an EFA interface (then a fleet of >1 uses a cluster placement group)."""
    spot: bool
    """Whether EC2 offers it as a Spot instance."""
    efa_rdma: bool = False
    """Whether its EFA does RDMA reads (GPUDirect RDMA: p4d, p5), which libfabric must be told to use."""

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


INSTANCE_TYPES: tuple[GpuInstanceType, ...] = (
    GpuInstanceType("g5.xlarge", "A10G", 1, efa=False, spot=True),
    GpuInstanceType("g5.2xlarge", "A10G", 1, efa=False, spot=True),
    GpuInstanceType("g5.12xlarge", "A10G", 4, efa=False, spot=True),
    GpuInstanceType("g5.48xlarge", "A10G", 8, efa=True, spot=True),
    GpuInstanceType("g6e.xlarge", "L40S", 1, efa=False, spot=True),
    GpuInstanceType("g6e.12xlarge", "L40S", 4, efa=True, spot=True),
    GpuInstanceType("g6e.48xlarge", "L40S", 8, efa=True, spot=True),
    GpuInstanceType("p4d.24xlarge", "A100", 8, efa=True, spot=True, efa_rdma=True),
    # P5 capacity is sold through Capacity Blocks and On-Demand; ernie does not request it as Spot.
    GpuInstanceType("p5.48xlarge", "H100", 8, efa=True, spot=False, efa_rdma=True),
)


# Families ernie no longer offers, and why: config.py names the reason instead of "unknown type".
RETIRED_FAMILIES: dict[str, str] = {
    family: "V100 (sm_70): the PyTorch training images ernie knows are built for CUDA 12.8 and later, which carry "
            "no sm_70 kernels, and the Deep Learning Base AMI no longer lists P3. To use one anyway, run an image "
            "built for CUDA 12.6 or earlier (e.g. pytorch-training:2.6.0-gpu-py312-cu126-ubuntu22.04-ec2) on hosts "
            "you make yourself (`ernie run --inventory FILE`); on this stack pick g5, g6e, p4d or p5"
    for family in ("p3", "p3dn")
}


def lookup_instance(name: str) -> GpuInstanceType | None:
    """The catalog entry for `name`, or None when it is not a GPU type ernie knows."""
    return next((t for t in INSTANCE_TYPES if t.name == name), None)


# EFA inside a container: its uverbs device (the fleet gives each instance one EFA interface), memory that may be
# locked without limit (libfabric registers NCCL's buffers), and libfabric told to use EFA; without them NCCL
# falls back to TCP sockets (aws-ofi-nccl's and the DLC's EFA guides).
EFA_DEVICES = ("/dev/infiniband/uverbs0",)


def uses_efa(instance: GpuInstanceType, count: int) -> bool:
    """A fleet of more than one EFA-capable instance talks over EFA (a cluster placement group, EFA interfaces)."""
    return instance.efa and count > 1


def efa_container_options(instance: GpuInstanceType) -> dict[str, object]:
    """The inventory's `container` options for a fleet whose instances talk over EFA."""
    env = {"FI_PROVIDER": "efa", "FI_EFA_FORK_SAFE": "1"}
    if instance.efa_rdma:
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
    return {"devices": list(EFA_DEVICES), "ulimits": ["memlock=-1:-1"], "env": env}


# The Deep Learning Base AMI: NVIDIA driver, CUDA, Docker and the NVIDIA container toolkit, no framework.
AMI_OWNER = "amazon"
AMI_NAME_PATTERN = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) ????????"
AMI_SSH_USER = "ubuntu"

# Training images per framework: repository and the tags ernie has checked (available_images.md).
DLC_REPOSITORIES: dict[str, str] = {
    "pytorch": "pytorch-training",
    "tensorflow": "tensorflow-training",
}
DLC_TAGS: dict[str, tuple[str, ...]] = {
    "pytorch": (
        "2.9.0-gpu-py312-cu130-ubuntu22.04-ec2",
        "2.8.0-gpu-py312-cu129-ubuntu22.04-ec2",
        "2.7.1-gpu-py312-cu128-ubuntu22.04-ec2",
    ),
    "tensorflow": (
        "2.19.0-gpu-py312-cu125-ubuntu22.04-ec2",
        "2.18.0-gpu-py310-cu125-ubuntu22.04-ec2",
    ),
}
# Approximate size of a pulled and extracted training image, for sizing the root volume.
DLC_IMAGE_GIB = 40

# The account that publishes DLC images in each region; most share one, a few opt-in regions have their own.
DLC_DEFAULT_ACCOUNT = "763104351884"
DLC_DEFAULT_REGIONS: tuple[str, ...] = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
    "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1",
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
)
DLC_OTHER_ACCOUNTS: dict[str, str] = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "eu-south-1": "692866216735",
    "me-south-1": "217643126080",
    "ap-southeast-3": "907027046896",
    "me-central-1": "914824155844",
    "il-central-1": "780543022126",
}


def dlc_regions() -> list[str]:
    """Regions where ernie knows the DLC registry account."""
    return [*DLC_DEFAULT_REGIONS, *DLC_OTHER_ACCOUNTS]


def dlc_account(region: str) -> str:
    """The AWS account publishing DLC images in `region` (the registry host and the role's ECR ARN name it)."""
    return DLC_OTHER_ACCOUNTS.get(region, DLC_DEFAULT_ACCOUNT)


def dlc_registry(region: str) -> str:
    """The ECR registry host serving DLC images in `region`."""
    return f"{dlc_account(region)}.dkr.ecr.{region}.amazonaws.com"


def dlc_image(region: str, framework: str, tag: str) -> str:
    """The full image URI a host pulls: registry/repository:tag."""
    return f"{dlc_registry(region)}/{DLC_REPOSITORIES[framework]}:{tag}"
