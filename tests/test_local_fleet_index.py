"""The local endpoint's fleet index and thing groups, as AWS documents them: ListThingsInThingGroup's pages,
SearchIndex over AWS's query syntax (and the queries AWS refuses), GetBucketsAggregation, dynamic thing groups."""

from __future__ import annotations

from collections import Counter

import pytest

from device_provisioning import aws
from device_provisioning.fleet import index
from devtools import local_registry
from tests.fleet_scale_helpers import PREFIX, fleet, unique

# The world the scale tests share (fixtures session, world, indexing).
pytest_plugins = ("tests.fleet_scale_fixtures",)


# --- the local endpoint, as AWS documents it --------------------------------------------------------------


def test_list_things_in_thing_group_pages_as_aws_does(session: aws.Aws, world: dict) -> None:  # type: ignore[type-arg]
    iot = session.client("iot")
    group, things = fleet(world, 260)
    child = unique(f"{PREFIX}child")
    iot.create_thing_group(thingGroupName=child, parentGroupName=group)
    iot.create_thing(thingName=f"{child}-x")
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=f"{child}-x")
    first = iot.list_things_in_thing_group(thingGroupName=group, maxResults=250)
    assert len(first["things"]) == 250 and first["nextToken"]
    second = iot.list_things_in_thing_group(thingGroupName=group, maxResults=250, nextToken=first["nextToken"])
    assert len(second["things"]) == 10 and "nextToken" not in second
    assert set(first["things"] + second["things"]) == set(things)
    recursive = iot.get_paginator("list_things_in_thing_group").paginate(thingGroupName=group, recursive=True)
    assert sum(len(page["things"]) for page in recursive) == 261
    with pytest.raises(iot.exceptions.InvalidRequestException, match="maxResults"):
        iot.list_things_in_thing_group(thingGroupName=group, maxResults=251)
    local_registry.reset_call_counts()
    assert iot.describe_thing(thingName=things[-1])["thingName"] == things[-1]
    assert local_registry.call_counts() == Counter({"iot:DescribeThing": 1})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("attributes.otaFamily:pkcs11", lambda n, b: 30 <= n < 40),
        ("attributes.otaFamily:PKCS11 AND NOT attributes.codeVerifySha256:{old}", lambda n, b: n == 30),
        ("attributes.otaFamily:beta -attributes.codeVerifySha256:{current}", lambda n, b: n == 10),
        ("thingName:{group}-00000?", lambda n, b: n == 10),
        ("thingName:{group}-00000* OR thingName:{group}-00009?", lambda n, b: n == 20),
        ("attributes.rolloutBucket:[10 TO 19]", lambda n, b: n == sum(10 <= x <= 19 for x in b)),
        ("attributes.rolloutBucket:{{10 TO 19}}", lambda n, b: n == sum(10 < x < 19 for x in b)),
        ('thingGroupNames:({group} OR nothing) AND attributes.appVersion:"1.2.0"', lambda n, b: n == 100),
    ],
)
def test_search_index_answers_the_query_syntax_aws_documents(  # type: ignore[no-untyped-def]
    session: aws.Aws,
    world: dict,
    indexing: None,
    query: str,
    expected,  # type: ignore[type-arg]
) -> None:
    iot = session.client("iot")
    group, things = fleet(world, 100)
    scoped = index.all_of(f"thingGroupNames:{group}", query.format(group=group, **world["fingerprints"]))
    found = list(index.search(iot, scoped))
    assert expected(len(found), [index.rollout_bucket(thing) for thing in things]), (scoped, len(found))
    assert {d["thingName"] for d in found} <= set(things)


@pytest.mark.parametrize(
    "query",
    ["thingName:", "shadow.reported.x:1", "thingName:*a AND thingGroupNames:*b", "thingName:a@b", "(thingName:a"],
)
def test_queries_aws_would_refuse_are_refused(session: aws.Aws, indexing: None, query: str) -> None:
    iot = session.client("iot")
    with pytest.raises(iot.exceptions.InvalidQueryException):
        iot.search_index(queryString=query)


def test_fleet_index_answers_nothing_while_thing_indexing_is_off(session: aws.Aws) -> None:
    iot = session.client("iot")
    with pytest.raises(iot.exceptions.ResourceNotFoundException, match="thing indexing"):
        iot.search_index(queryString="*")


def test_aggregations_count_cohorts_and_dynamic_groups_hold_what_their_query_matches(
    session: aws.Aws,
    world: dict,  # type: ignore[type-arg]
    indexing: None,
) -> None:
    iot = session.client("iot")
    group, things = fleet(world, 200)
    query = f"thingGroupNames:{group}"
    total, families = index.buckets(iot, query, "attributes.otaFamily")
    assert total == 200 and families == {"beta": 140, "pkcs11": 60}
    with pytest.raises(iot.exceptions.InvalidRequestException, match="custom field"):
        index.buckets(iot, query, "attributes.colour")  # not a custom field of the configuration
    with pytest.raises(iot.exceptions.InvalidRequestException, match="maxResults"):
        iot.search_index(queryString=query, maxResults=101)
    dynamic = unique(f"{PREFIX}dyn")
    iot.create_dynamic_thing_group(thingGroupName=dynamic, queryString=f"{query} AND attributes.otaFamily:pkcs11")
    members = [t for p in iot.get_paginator("list_things_in_thing_group").paginate(thingGroupName=dynamic)
               for t in p["things"]]  # fmt: skip
    assert len(members) == 60 and iot.describe_thing_group(thingGroupName=dynamic)["queryString"].endswith("pkcs11")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="dynamic"):
        iot.add_thing_to_thing_group(thingGroupName=dynamic, thingName=things[0])
    with pytest.raises(iot.exceptions.InvalidRequestException, match="DeleteDynamicThingGroup"):
        iot.delete_thing_group(thingGroupName=dynamic)
    iot.update_thing(thingName=things[0], attributePayload={"attributes": {"otaFamily": "pkcs11"}, "merge": True})
    assert len(list(index.search(iot, f"thingGroupNames:{group} AND attributes.otaFamily:pkcs11"))) == 61
    job = unique("dynjob")
    iot.create_job(jobId=job, targets=[iot.describe_thing_group(thingGroupName=dynamic)["thingGroupArn"]],
                   document="{}", targetSelection="CONTINUOUS")  # fmt: skip
    assert iot.describe_job(jobId=job)["job"]["jobProcessDetails"]["numberOfQueuedThings"] == 61
    iot.delete_dynamic_thing_group(thingGroupName=dynamic)
