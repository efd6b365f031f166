"""A VM's `<lease>` placeholders, as the Engine sends them, filled in from Lease.info."""

from __future__ import annotations

import pytest

from hostvisor.actors.storage.leases_xml import fill_leases, leases_to_fill

pytestmark = pytest.mark.unit

SD = "4f0c7ba0-3e63-4c28-9b4c-3cfb0b5b2e0e"
LEASE = "0e9d5a0a-8d0e-4bd4-9b65-1c2a4a4e6f11"

ENGINE_XML = f"""<domain type='kvm' xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>
  <metadata><ovirt-vm:vm><ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion></ovirt-vm:vm></metadata>
  <devices>
    <lease>
      <key>{LEASE}</key>
      <lockspace>{SD}</lockspace>
      <target offset="LEASE-OFFSET:{LEASE}:{SD}" path="LEASE-PATH:{LEASE}:{SD}"/>
    </lease>
  </devices>
</domain>"""


def test_the_engines_placeholders_become_this_hosts_path_and_offset() -> None:
    assert leases_to_fill(ENGINE_XML) == [(SD, LEASE)]
    path = f"/rhev/data-center/mnt/server:_export/{SD}/dom_md/xleases"
    filled = fill_leases(ENGINE_XML, {(SD, LEASE): {"path": path, "offset": 3145728}})
    assert f'path="{path}"' in filled
    assert 'offset="3145728"' in filled
    assert "LEASE-" not in filled
    assert leases_to_fill(filled) == []
    # nothing else changed: the metadata's namespace prefixes are as they were
    assert filled.replace(path, "P").replace("3145728", "O") == ENGINE_XML.replace(
        f"LEASE-PATH:{LEASE}:{SD}", "P"
    ).replace(f"LEASE-OFFSET:{LEASE}:{SD}", "O")


def test_a_filled_lease_and_a_vm_without_leases_are_left_alone() -> None:
    done = ENGINE_XML.replace(f"LEASE-PATH:{LEASE}:{SD}", "/p").replace(
        f"LEASE-OFFSET:{LEASE}:{SD}", "1048576"
    )
    assert leases_to_fill(done) == []
    assert fill_leases(done, {}) == done
    plain = "<domain><devices><disk/></devices></domain>"
    assert fill_leases(plain, {}) == plain


def test_a_lease_missing_from_the_lookup_is_an_error() -> None:
    with pytest.raises(KeyError):
        fill_leases(ENGINE_XML, {})
