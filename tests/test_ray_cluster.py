"""Placement from what each node has (pipelines.ray_cluster), on explicit node lists: a
bundle never spans two nodes, so a need fits when the nodes hold all its bundles at once,
not when the cluster's totals cover it."""

from __future__ import annotations

import pytest

from pipelines.ray_cluster import Need, admit, bundle_cpus, largest_node, node_resources

HEAD = {"CPU": 0.0, "memory": 8e9}  # a head with no CPUs for work
TWO_8 = [HEAD, {"CPU": 8.0}, {"CPU": 8.0}]


def test_a_bundle_must_fit_one_node_not_the_totals() -> None:
    one_16 = Need.of(1, 16)
    assert not one_16.shortfall({"CPU": 16.0})  # the totals would say it fits...
    assert not one_16.fits(TWO_8) and one_16.placeable(TWO_8) == 0  # ...no node holds it
    assert Need.of(1, 8).fits(TWO_8) and Need.of(2, 8).fits(TWO_8)
    assert not Need.of(3, 8).fits(TWO_8)
    assert Need.of(3, 5).placeable(TWO_8) == 2 and Need.of(3, 4).placeable(TWO_8) == 4
    gpu = [{"CPU": 16.0}, {"CPU": 4.0, "GPU": 2.0}]
    assert Need.of(4, 1, 0.5).fits(gpu) and not Need.of(5, 1, 0.5).fits(gpu)
    assert not Need.of(1, 8, 1).fits(gpu)  # the GPU node has 4 CPUs, the 16-CPU one no GPU
    assert Need.of(2, 1).per_node(HEAD) == 0 and Need.of(2, 0.5).per_node({"CPU": 1.0}) == 2


def test_bundle_cpus_shares_out_cpus_so_that_every_bundle_fits() -> None:
    assert bundle_cpus(1, TWO_8, most=16) == 8  # paper mode: one actor, at most a node
    assert bundle_cpus(3, TWO_8, most=16 // 3) == 4  # 3 videos (or workers) on 2 nodes
    assert bundle_cpus(2, TWO_8, most=8) == 8
    assert bundle_cpus(16, TWO_8, most=1) == 1
    assert bundle_cpus(1, [HEAD], most=0) == 1  # nothing fits: 1, and the check says so
    gpu = [{"CPU": 16.0}, {"CPU": 6.0, "GPU": 2.0}]
    assert bundle_cpus(2, gpu, most=11, gpus=1) == 3


def test_admit_runs_grows_or_refuses() -> None:
    need = Need.of(1, 1, 1)
    cpus_only = [HEAD, {"CPU": 8.0}]
    assert admit(need, cpus_only, can_grow=True) == "grow"
    assert admit(need, cpus_only, can_grow=False) == "refuse"
    with_gpu = [*cpus_only, {"CPU": 8.0, "GPU": 1.0}]
    assert admit(need, with_gpu, can_grow=False) == "run"
    assert admit(need, with_gpu, can_grow=True) == "run"
    assert admit(Need.of(1, 1), [HEAD], can_grow=True) == "grow"  # only a head so far
    assert admit(Need.of(1, 1), [HEAD], can_grow=False) == "refuse"
    assert largest_node(with_gpu) == 8.0 and largest_node(with_gpu, "GPU") == 1.0
    assert largest_node([]) == 0.0
    assert Need.of(2, 4, 0.5).describe() == "2 x {CPU: 4, GPU: 0.5}"


@pytest.mark.ray
def test_node_resources_lists_each_alive_node(ray_local) -> None:
    nodes = node_resources()
    assert len(nodes) == 1 and nodes[0]["CPU"] == 2.0
    assert Need.of(2, 1).fits(nodes) and not Need.of(1, 3).fits(nodes)
