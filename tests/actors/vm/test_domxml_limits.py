"""A client's domain XML is checked before anything acts on it: size, depth, DTDs, counts."""

from __future__ import annotations

import uuid

import pytest

from harness.vms import td_domain_xml
from hostvisor.actors.errors import InvalidArgument
from hostvisor.actors.vm import domxml

pytestmark = pytest.mark.unit


def domain(inner: str = "", *, vcpu: str = "1", memory: str = "64") -> str:
    return (
        f"<domain type='kvm'><name>x</name><uuid>{uuid.uuid4()}</uuid>"
        f"<memory unit='MiB'>{memory}</memory><vcpu>{vcpu}</vcpu>{inner}</domain>"
    )


def test_an_ordinary_domain_passes_and_parses():
    xml = td_domain_xml(name="ok")
    assert domxml.parse_untrusted(xml) == domxml.parse(xml)


def test_nesting_deeper_than_the_limit_is_refused_not_recursed_into():
    deep = "<a>" * 5000 + "</a>" * 5000
    with pytest.raises(InvalidArgument, match="nested deeper"):
        domxml.parse_untrusted(domain(f"<metadata>{deep}</metadata>"))


def test_entity_declarations_are_refused():
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE domain [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    )
    with pytest.raises(InvalidArgument, match="entity"):
        domxml.parse_untrusted(bomb + domain("<description>&b;</description>"))


def test_an_oversized_document_is_refused_before_it_is_parsed():
    padding = "<description>" + "x" * domxml.MAX_XML_CHARS + "</description>"
    with pytest.raises(InvalidArgument, match="larger than"):
        domxml.parse_untrusted(domain(padding))


@pytest.mark.parametrize(
    ("vcpu", "memory"), [("two", "64"), ("1", "64MB"), ("²", "64"), ("1", "9" * 40), ("-1", "64")]
)
def test_counts_that_are_not_whole_numbers_are_a_clear_error(vcpu: str, memory: str):
    with pytest.raises(InvalidArgument, match="is not a count"):
        domxml.parse(domain(vcpu=vcpu, memory=memory))


def test_malformed_xml_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="well-formed"):
        domxml.parse_untrusted("<domain><uuid>")
