"""Bad inventories: each test breaks one thing and checks the problem names file, line, field.

Every problem must be precise enough to fix without guessing, so these tests pin all three
coordinates (and a piece of the message and of the fix), not just "it failed".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inventoryfixtures import CSV_HEADER, CSV_ROWS, SmallFleet, assert_problem
from werft.errors import InventoryError
from werft.inventory import load_inventory

SITE = "sites/fra1.yaml"
CSV = "edge-sites.csv"


@pytest.fixture
def fleet(tmp_path: Path) -> SmallFleet:
    return SmallFleet(tmp_path / "inv")


# --- YAML syntax and schema --------------------------------------------------------------


def test_yaml_syntax_error_names_its_line(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "  region: eu-central\n", "  region: eu-central\n  owners: [a, b\n")
    problem = fleet.only_problem()
    assert problem.file == fleet.file(SITE)
    assert problem.field == "yaml"
    assert "not valid YAML" in problem.message
    # libyaml notices the unclosed flow sequence on the line after it
    assert problem.line in (fleet.line(SITE, "owners: [a, b"), fleet.line(SITE, "owners") + 1)


def test_duplicate_yaml_key_is_reported_instead_of_silently_dropped(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "  region: eu-central\n", "  region: eu-central\n  region: eu-west\n")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "region: eu-west"),
        field="spec.region",
        message="duplicate key (first at line",
        fix="keep one",
    )


def test_malformed_mac(fleet: SmallFleet) -> None:
    fleet.edit(SITE, '"02:00:00:00:01:02"', '"52:54:00:zz:00:01"')
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "52:54:00:zz"),
        field="spec.machines[1].bootMACAddress",
        message="'52:54:00:zz:00:01' is not a MAC address",
        fix="six hex pairs separated by ':'",
    )


def test_unquoted_mac_that_yaml_reads_as_a_number_gets_a_quote_hint(fleet: SmallFleet) -> None:
    fleet.edit(SITE, '"02:00:00:00:01:02"', "52:54:00:12:34:56")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "52:54:00:12:34:56"),
        field="spec.machines[1].bootMACAddress",
        message="YAML reads the unquoted 52:54:00:12:34:56 as a int",
        fix='quote it: bootMACAddress: "52:54:00:12:34:56"',
    )


def test_misspelt_field_suggests_the_right_name(fleet: SmallFleet) -> None:
    fleet.edit(SITE, 'bootMACAddress: "02:00:00:00:01:01"', 'bootMacAdress: "02:00:00:00:01:01"')
    problems = fleet.problems()
    unknown = next(p for p in problems if p.field == "spec.machines[0].bootMacAdress")
    assert_problem(
        unknown,
        file=fleet.file(SITE),
        line=fleet.line(SITE, "bootMacAdress"),
        field="spec.machines[0].bootMacAdress",
        message="unknown field",
        fix="did you mean 'bootMACAddress'?",
    )


def test_missing_required_field_points_at_the_parent(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "      role: worker\n      bmc:", "      bmc:")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "- name: fra1-a-w0"),
        field="spec.machines[1].role",
        message="required field 'role' is missing",
        fix="add 'role'",
    )


def test_name_that_is_not_a_dns_label(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "  name: fra1-b\n", "  name: Fra1_B\n")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "Fra1_B"),
        field="metadata.name",
        message="'Fra1_B' is not a DNS-1123 label",
        fix="lower-case letters",
    )


def test_latitude_out_of_range(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "latitude: 50.11", "latitude: 150.11")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "latitude"),
        field="spec.location.latitude",
        message="150.11",
        fix="-90 to 90",
    )


def test_wrong_enum_value(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "  tier: core\n", "  tier: centre\n")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "tier:"),
        field="spec.tier",
        message="'core', 'near-edge' or 'edge'",
    )


def test_machine_with_both_bmc_and_vm(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        '      bootMACAddress: "02:00:00:00:01:01"\n',
        '      bootMACAddress: "02:00:00:00:01:01"\n      vm:\n        host: test:///default\n',
    )
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "- name: fra1-a-cp0"),
        field="spec.machines[0]",
        message="exactly one of 'bmc' (bare metal) or 'vm'",
    )


def test_loose_kubernetes_manifest_is_not_a_werft_document(fleet: SmallFleet) -> None:
    fleet.write("extra/configmap.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file("extra/configmap.yaml"),
        line=1,
        field="apiVersion",
        message="not a werft document",
        fix="belongs in an AddonSet's manifests",
    )


def test_unknown_kind(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "kind: Site", "kind: Location")
    # the Site is gone, so the clusters on it are reported too
    problems = fleet.problems()
    assert [p.field for p in problems] == ["kind", "spec.site", "spec.site"]
    assert_problem(
        problems[0],
        file=fleet.file(SITE),
        line=2,
        field="kind",
        message="'Location' is not an inventory kind",
        fix="Fleet, Site",
    )


# --- literal secrets ------------------------------------------------------------------------


def test_literal_password_key_is_an_error_and_is_not_echoed(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        '        credentialsRef: bmc-fra1\n      bootMACAddress: "02:00:00:00:01:01"',
        "        credentialsRef: bmc-fra1\n        password: hunter2\n"
        '      bootMACAddress: "02:00:00:00:01:01"',
    )
    problem = fleet.only_problem()
    assert_problem(
        problem,
        file=fleet.file(SITE),
        line=fleet.line(SITE, "password: hunter2"),
        field="spec.machines[0].bmc.password",
        message="literal secret",
        fix="werft secret set",
    )
    assert "hunter2" not in str(problem)


def test_credentials_in_a_bmc_url(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        "redfish+http://127.0.0.1:8686/bmc/fra1-a-w0/",
        "redfish+http://admin:s3cret@127.0.0.1:8686/bmc/fra1-a-w0/",
    )
    problem = fleet.only_problem()
    assert_problem(
        problem,
        file=fleet.file(SITE),
        line=fleet.line(SITE, "admin:s3cret"),
        field="spec.machines[1].bmc.address",
        message="credentials written into it",
        fix="credentialsRef",
    )
    assert "s3cret" not in str(problem)


def test_credentials_ref_holding_user_and_password(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        '        credentialsRef: bmc-fra1\n      bootMACAddress: "02:00:00:00:01:02"',
        '        credentialsRef: "root:calvin"\n      bootMACAddress: "02:00:00:00:01:02"',
    )
    problem = fleet.only_problem()
    assert_problem(
        problem,
        file=fleet.file(SITE),
        line=fleet.line(SITE, "root:calvin"),
        field="spec.machines[1].bmc.credentialsRef",
        message="'user:password'",
    )
    assert "calvin" not in str(problem)


# --- BMC addresses ------------------------------------------------------------------------------


def test_bmc_address_with_a_non_redfish_scheme(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        "redfish+http://127.0.0.1:8686/bmc/fra1-a-cp0/",
        "https://127.0.0.1:8686/bmc/fra1-a-cp0/",
    )
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "https://127.0.0.1:8686/bmc/fra1-a-cp0"),
        field="spec.machines[0].bmc.address",
        message="scheme 'https://' is not a Redfish scheme",
        fix="redfish+https://",
    )


def test_bmc_address_without_a_system(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "bmc/fra1-a-cp0/redfish/v1/Systems/1", "bmc/fra1-a-cp0/redfish/v1")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "bmc/fra1-a-cp0/redfish/v1"),
        field="spec.machines[0].bmc.address",
        message="/redfish/v1/Systems/<id>",
    )


# --- references --------------------------------------------------------------------------------


def test_cluster_on_an_unknown_site(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        "  site: fra1\n  profile: core-small\n  network:\n    nodeCIDR: 172.17",
        "  site: fra9\n  profile: core-small\n  network:\n    nodeCIDR: 172.17",
    )
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "fra9"),
        field="spec.site",
        message="site 'fra9' does not exist",
        fix="fra1",
    )


def test_cluster_with_an_unknown_profile(fleet: SmallFleet) -> None:
    fleet.edit(
        SITE,
        "  profile: core-small\n  kubernetesVersion",
        "  profile: core-big\n  kubernetesVersion",
    )
    problems = fleet.problems()
    assert_problem(
        problems[0],
        file=fleet.file(SITE),
        line=fleet.line(SITE, "core-big"),
        field="spec.profile",
        message="profile 'core-big' does not exist",
        fix="core-small",
    )


def test_unknown_addon_set_is_reported_where_the_profile_names_it(fleet: SmallFleet) -> None:
    fleet.edit(
        "profiles.yaml",
        "  addonSets: [base]\n  osImage: images",
        "  addonSets: [base, monitoring]\n  osImage: images",
    )
    assert_problem(
        fleet.only_problem(),
        file=fleet.file("profiles.yaml"),
        line=fleet.line("profiles.yaml", "monitoring"),
        field="spec.addonSets[1]",
        message="add-on set 'monitoring' does not exist",
        fix="base",
    )


def test_addon_depends_on_an_unknown_addon(fleet: SmallFleet) -> None:
    fleet.edit("addons/base.yaml", "dependsOn: [cni]", "dependsOn: [cni, kube-proxy]")
    problem = next(p for p in fleet.problems() if "does not exist" in p.message)
    assert_problem(
        problem,
        file=fleet.file("addons/base.yaml"),
        line=fleet.line("addons/base.yaml", "kube-proxy"),
        field="spec.addons[1].dependsOn[1]",
        message="'kube-proxy' does not exist",
    )


def test_addon_dependency_cycle(fleet: SmallFleet) -> None:
    fleet.edit("addons/base.yaml", "    - name: cni\n", "    - name: cni\n      dependsOn: [dns]\n")
    problem = fleet.only_problem()
    assert problem.file == fleet.file("addons/base.yaml")
    assert problem.field.endswith("dependsOn")
    assert "dependency cycle" in problem.message and "cni" in problem.message


def test_missing_manifest_template(fleet: SmallFleet) -> None:
    fleet.edit("addons/base.yaml", "- cni/cni.yaml.j2", "- cni/calico.yaml.j2")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file("addons/base.yaml"),
        line=fleet.line("addons/base.yaml", "calico"),
        field="spec.addons[0].manifests[0]",
        message="manifest 'cni/calico.yaml.j2' not found (addons/cni/calico.yaml.j2)",
        fix="relative to the folder of the AddonSet's file",
    )


def test_manifest_outside_the_inventory(fleet: SmallFleet) -> None:
    fleet.edit("addons/base.yaml", "- cni/cni.yaml.j2", "- ../../etc/passwd")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file("addons/base.yaml"),
        line=fleet.line("addons/base.yaml", "etc/passwd"),
        field="spec.addons[0].manifests[0]",
        message="points outside the inventory",
    )


# --- fleet-wide rules --------------------------------------------------------------------------


def test_kubernetes_version_not_allowed_by_the_fleet(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "kubernetesVersion: v1.30.6", "kubernetesVersion: 1.29.0")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "1.29.0"),
        field="spec.kubernetesVersion",
        message="Kubernetes 1.29.0 is not in the fleet's kubernetesVersions",
        fix="1.30.6, 1.31.4",
    )


def test_even_control_plane_count(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "      role: worker\n      bmc:", "      role: control-plane\n      bmc:")
    fleet.edit(
        SITE,
        "  kubernetesVersion: v1.30.6\n",
        "  kubernetesVersion: v1.30.6\n"
        "  controlPlane:\n    replicas: 2\n  workers:\n    replicas: 0\n",
    )
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "replicas: 2"),
        field="spec.controlPlane.replicas",
        message="2 control-plane nodes",
        fix="1, 3 or 5",
    )


def test_machines_do_not_match_the_declared_replicas(fleet: SmallFleet) -> None:
    # the profile says 1 worker; fra1-b lists none
    fleet.edit(
        SITE,
        "    - name: fra1-b-w0\n      role: worker\n      vm:\n"
        "        host: test:///default\n        memoryMiB: 2048\n",
        "",
    )
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "  machines:", nth=2),
        field="spec.machines",
        message="0 worker machine(s) listed, but workers.replicas is 1",
        fix="list 1 machine(s) with role worker",
    )


def test_overlapping_cidrs_of_two_clusters_at_one_site(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "podCIDR: 10.1.0.0/16", "podCIDR: 10.0.128.0/17")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "10.0.128.0/17"),
        field="spec.network.podCIDR",
        message="podCIDR 10.0.128.0/17 of cluster 'fra1-b' overlaps podCIDR "
        "10.0.0.0/16 of cluster 'fra1-a' at site 'fra1'",
    )


def test_pod_and_service_cidr_overlap_within_a_cluster(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "serviceCIDR: 10.96.0.0/16", "serviceCIDR: 10.0.96.0/20")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "podCIDR: 10.0.0.0/16"),
        field="spec.network.podCIDR",
        message="podCIDR 10.0.0.0/16 overlaps serviceCIDR 10.0.96.0/20",
    )


def test_not_a_cidr(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "nodeCIDR: 172.17.0.0/16", "nodeCIDR: 172.17.0.1/16")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "172.17.0.1/16"),
        field="spec.network.nodeCIDR",
        message="'172.17.0.1/16' is not a CIDR",
        fix="host bits zero",
    )


def test_duplicate_bmc_address_in_yaml(fleet: SmallFleet) -> None:
    fleet.edit(SITE, "bmc/fra1-a-w0/redfish", "bmc/fra1-a-cp0/redfish")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(SITE),
        line=fleet.line(SITE, "bmc/fra1-a-cp0/redfish", nth=2),
        field="spec.machines[1].bmc.address",
        message=f"is also used at {fleet.file(SITE)}:{fleet.line(SITE, 'bmc/fra1-a-cp0/redfish')}",
    )


def test_duplicate_mac_between_yaml_and_csv(fleet: SmallFleet) -> None:
    fleet.edit(CSV, "02:00:00:00:02:02", "02:00:00:00:01:02")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(CSV),
        line=3,
        field="boot_mac",
        message=f"boot MAC '02:00:00:00:01:02' is also used at {fleet.file(SITE)}:"
        f"{fleet.line(SITE, '02:00:00:00:01:02')}",
    )


def test_cluster_defined_twice(fleet: SmallFleet) -> None:
    # more/dup.yaml sorts before sites/fra1.yaml, so the copy in sites/ is the second one
    fleet.write("more/dup.yaml", fleet.text(SITE).split("---\n")[2])
    assert_problem(
        fleet.only_problem(),  # the copy's machines are not reported as duplicates too
        file=fleet.file(SITE),
        line=fleet.line(SITE, "name: fra1-b"),
        field="metadata.name",
        message=f"Cluster 'fra1-b' is defined twice (also at {fleet.file('more/dup.yaml')}:4)",
    )


def test_second_fleet(fleet: SmallFleet) -> None:
    fleet.write("fleet2.yaml", fleet.text("fleet.yaml").replace("test-fleet", "other"))
    assert_problem(
        fleet.only_problem(),
        file=fleet.file("fleet2.yaml"),
        line=2,
        field="kind",
        message="a second Fleet",
        fix="exactly one Fleet",
    )


def test_no_fleet(fleet: SmallFleet) -> None:
    (fleet.root / "fleet.yaml").unlink()
    problems = fleet.problems()
    assert problems[0].field == "kind" and "no Fleet document" in problems[0].message


def test_no_api_endpoint(fleet: SmallFleet) -> None:
    fleet.edit(
        "fleet.yaml", '    apiEndpointTemplate: "http://127.0.0.1:8686/clusters/{cluster}"\n', ""
    )
    problems = fleet.problems()
    yaml_problem = next(p for p in problems if p.file == fleet.file(SITE))
    assert_problem(
        yaml_problem,
        file=fleet.file(SITE),
        line=fleet.line(SITE, "  network:"),
        field="spec.network",
        message="no API endpoint",
        fix="controlPlaneEndpoint",
    )
    csv_problem = next(p for p in problems if p.file == fleet.file(CSV))
    assert csv_problem.line == 2 and "apiEndpointTemplate" in csv_problem.message


def test_invalid_failure_budget_in_a_broken_fleet_is_the_only_problem(fleet: SmallFleet) -> None:
    fleet.edit("fleet.yaml", 'maxFailures: "5%"', "maxFailures: lots")
    assert_problem(
        fleet.only_problem(),  # no "no Fleet" and no knock-on problems in the clusters
        file=fleet.file("fleet.yaml"),
        line=fleet.line("fleet.yaml", "maxFailures"),
        field="spec.rollout.tiers.edge.maxFailures",
        message="'lots': must be a count like 3 or a share like '5%'",
    )


def test_endpoint_template_without_cluster(fleet: SmallFleet) -> None:
    fleet.edit("fleet.yaml", "/clusters/{cluster}", "/clusters/{site}")
    assert_problem(
        fleet.only_problem(),
        file=fleet.file("fleet.yaml"),
        line=fleet.line("fleet.yaml", "apiEndpointTemplate"),
        field="spec.defaults.apiEndpointTemplate",
        message="has no {cluster}",
    )


def test_missing_os_image(fleet: SmallFleet) -> None:
    fleet.edit("profiles.yaml", "  osImage: images/ubuntu.iso\n", "")
    problems = fleet.problems()
    assert {p.field for p in problems} == {"spec"}
    assert all("no osImage" in p.message for p in problems)
    assert [p.line for p in problems] == [
        fleet.line(SITE, "spec:", nth=2),
        fleet.line(SITE, "spec:", nth=3),
    ]


# --- edge CSV -------------------------------------------------------------------------------


def csv_text(*rows: str, header: str = CSV_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def test_csv_missing_column(fleet: SmallFleet) -> None:
    fleet.write(
        CSV,
        csv_text(*(r.rsplit(",", 1)[0] for r in CSV_ROWS), header=CSV_HEADER.replace(",owner", "")),
    )
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(CSV),
        line=1,
        field="owner",
        message="missing column 'owner'",
        fix="the header must be",
    )


def test_csv_extra_column(fleet: SmallFleet) -> None:
    fleet.write(CSV, csv_text(*(r + ",x" for r in CSV_ROWS), header=CSV_HEADER + ",rack"))
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(CSV),
        line=1,
        field="rack",
        message="unknown column 'rack'",
    )


def test_csv_not_utf8(fleet: SmallFleet) -> None:
    text = csv_text(*CSV_ROWS).replace("edge-ops", "edge-\xf6ps", 1).encode("latin-1")
    fleet.write(CSV, text)
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(CSV),
        line=2,
        field="encoding",
        message="not UTF-8 (byte 0xf6",
        fix="save the file as UTF-8",
    )


def test_csv_empty_row(fleet: SmallFleet) -> None:
    fleet.write(CSV, csv_text(CSV_ROWS[0], "", CSV_ROWS[1], ",,,,,,,,,"))
    problems = fleet.problems()
    assert [(p.line, p.field, p.message) for p in problems] == [
        (3, "row", "empty row"),
        (5, "row", "empty row"),
    ]


def test_csv_ragged_row(fleet: SmallFleet) -> None:
    fleet.write(CSV, csv_text(CSV_ROWS[0], CSV_ROWS[1] + ",extra", CSV_ROWS[2]))
    assert_problem(
        fleet.only_problem(),
        file=fleet.file(CSV),
        line=3,
        field="row",
        message="11 fields, but the header has 10",
    )


@pytest.mark.parametrize(
    ("old", "new", "field", "message", "fix"),
    [
        ("48.8566", "north", "latitude", "'north' is not a latitude", "-90 to 90"),
        ("2.3522", "190.5", "longitude", "'190.5' is not a longitude", "-180 to 180"),
        ("02:00:00:00:02:01", "02-00-00-00-02-01", "boot_mac", "is not a MAC address", "hex"),
        ("edge-001,", "Edge_001,", "site", "'Edge_001' is not a DNS-1123 label", "DNS-1123"),
        (
            "edge-single-node,,",
            "edge-tiny,,",
            "profile",
            "profile 'edge-tiny' does not exist",
            "edge-single-node",
        ),
        (
            "edge-single-node,,",
            "edge-single-node,1.28.1,",
            "kubernetes_version",
            "Kubernetes 1.28.1 is not in the fleet's kubernetesVersions",
            "1.31.4",
        ),
        (
            "edge-single-node,,",
            "edge-single-node,latest,",
            "kubernetes_version",
            "'latest' is not a Kubernetes version",
            "1.31.4",
        ),
        (
            "bmc-edge-eu-west,02:00:00:00:02:01",
            "admin:hunter2,02:00:00:00:02:01",
            "bmc_credentials",
            "literal credential",
            "werft secret set",
        ),
        (
            "redfish+http://127.0.0.1:8686/bmc/edge-001-n0/redfish/v1/Systems/1",
            "ipmi://10.0.0.1",
            "bmc_address",
            "not a Redfish scheme",
            "redfish+https://",
        ),
        ("edge-001,eu-west", "edge-001,", "region", "region is empty", "fill in region"),
    ],
)
def test_csv_bad_value(
    fleet: SmallFleet, old: str, new: str, field: str, message: str, fix: str
) -> None:
    rows = [CSV_ROWS[0].replace(old, new, 1), *CSV_ROWS[1:]]
    assert rows[0] != CSV_ROWS[0]
    fleet.write(CSV, csv_text(*rows))
    problem = fleet.only_problem()
    assert_problem(problem, file=fleet.file(CSV), line=2, field=field, message=message, fix=fix)
    assert "hunter2" not in str(problem)


def test_csv_duplicate_site_and_clash_with_a_yaml_site(fleet: SmallFleet) -> None:
    fleet.write(
        CSV,
        csv_text(
            *CSV_ROWS,
            CSV_ROWS[1]
            .replace("edge-002,", "fra1,", 1)
            .replace("02:02", "02:09")
            .replace("edge-002-n0", "fra1-n0"),
        ),
    )
    problems = fleet.problems()
    assert_problem(
        problems[0],
        file=fleet.file(CSV),
        line=5,
        field="site",
        message=f"site 'fra1' is also used at {fleet.file(SITE)}:{fleet.line(SITE, 'name: fra1')}",
    )


def test_csv_profile_that_is_not_single_node(fleet: SmallFleet) -> None:
    fleet.write(CSV, csv_text(*(r.replace("edge-single-node", "core-small") for r in CSV_ROWS)))
    problems = [p for p in fleet.problems() if "single-node" in p.message]
    assert len(problems) == 1
    assert_problem(
        problems[0],
        file=fleet.file(CSV),
        line=2,
        field="profile",
        message="profile 'core-small' is not single-node",
        fix="controlPlane.replicas: 1 and workers.replicas: 0",
    )


def test_every_problem_is_reported_at_once(fleet: SmallFleet) -> None:
    fleet.edit(SITE, '"02:00:00:00:01:02"', '"zz"')  # fra1-a fails its schema check ...
    fleet.edit(
        SITE, "  name: fra1-b\nspec:\n", "  name: fra1-b\nspec:\n  kubernetesVersion: 1.29.0\n"
    )
    fleet.edit("addons/base.yaml", "- cni/cni.yaml.j2", "- cni/gone.yaml.j2")
    fleet.write(CSV, csv_text(CSV_ROWS[0].replace("48.8566", "99"), *CSV_ROWS[1:]))
    fields = {p.field for p in fleet.problems()}
    assert {
        "spec.machines[1].bootMACAddress",
        "spec.kubernetesVersion",
        "spec.addons[0].manifests[0]",
        "latitude",
    } <= fields


def test_load_inventory_raises_before_returning_anything(fleet: SmallFleet) -> None:
    fleet.write(CSV, csv_text(CSV_ROWS[0].replace("48.8566", "99"), *CSV_ROWS[1:]))
    with pytest.raises(InventoryError) as caught:
        load_inventory(fleet.root)
    assert [p.field for p in caught.value.problems] == ["latitude"]
    assert "edge-sites.csv:2: latitude: '99' is not a latitude" in str(caught.value)
