"""Uses the Python client generated from openapi/openapi.json against a
running gateway: create a key, send a batch, read the events back.

Run by tests/tests/openapi.rs with: python client_test.py BASE_URL PROJECT_ID SECRET_KEY
(the generated package `orrery_client` must be importable).
"""

import sys
import uuid

from orrery_client import AuthenticatedClient
from orrery_client.api.events import list_events
from orrery_client.api.ingestion import ingest_events
from orrery_client.api.keys import create_key
from orrery_client.models import BatchInput, EventInput, KeyIn, KeyKindOut
from orrery_client.models.event_input_properties_type_0 import EventInputPropertiesType0

base, project_id, secret_key = sys.argv[1:4]
admin = AuthenticatedClient(base_url=base, token=secret_key, prefix="", auth_header_name="X-API-Key")

created = create_key.sync(project_id=project_id, client=admin, body=KeyIn(name="python client", kind=KeyKindOut.PUBLIC))
assert created is not None and created.key.startswith("pk_"), created
public = AuthenticatedClient(base_url=base, token=created.key, prefix="", auth_header_name="X-API-Key")

ids = [str(uuid.uuid4()) for _ in range(5)]
events = []
for i, event_id in enumerate(ids):
    props = EventInputPropertiesType0()
    props.additional_properties = {"n": i}
    events.append(EventInput(event="generated_client", id=uuid.UUID(event_id), distinct_id="py", properties=props))
answer = ingest_events.sync(client=public, body=BatchInput(batch=events))
assert answer is not None, "ingest failed"
assert answer.accepted == 5, answer

page = list_events.sync(project_id=project_id, client=admin, event="generated_client", limit=100)
assert page is not None
got = sorted(str(e.id) for e in page.events)
assert got == sorted(ids), (got, ids)
assert all(e.distinct_id == "py" for e in page.events)
print("python client OK:", len(got), "events")
