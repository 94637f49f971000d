from tests.conftest import SERVICE_KEY
K = {"x-api-key": SERVICE_KEY}
def test_rest(stack):
    r = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "acc_abc123", "scopes": ["usage:read"]}, K)
    print(r.status, r.json())
    tok = r.json()["access_token"]
    body = {"uniqueId":"evt_123456","account":"acc_abc123","eventName":"api_call","timestamp":"2025-03-09T15:03:17Z","properties":{"endpoint":"/v1/analyze","tokens":1500}}
    r = stack.request("POST", "/mgt/v1/events", body, K); print(r.status, r.body)
    r = stack.request("POST", "/mgt/v1/events", body, K); print(r.status, r.body)
    r = stack.request("POST", "/mgt/v1/events", {**body, "account": "nobody"}, K); print(r.status, r.body)
    r = stack.request("POST", "/mgt/v1/events:batch", {"events": [body, {**body, "uniqueId": "x2"}, {**body, "account": "zz"}]}, K); print(r.status, r.body)
    r = stack.request("POST", "/mgt/v1/metrics", {"code": "tokens", "event_name": "api_call", "aggregation": "AGGREGATION_SUM", "property": "tokens"}, K); print(r.status, r.body)
    r = stack.request("GET", "/mgt/v1/accounts/acc_abc123/usage?metric_code=tokens&start_time=2025-03-01T00:00:00Z&end_time=2025-04-01T00:00:00Z&group_by=endpoint", None, K); print(r.status, r.body)
    r = stack.request("GET", "/api/v1/usage?metric_code=tokens&start_time=2025-03-01T00:00:00Z&end_time=2025-04-01T00:00:00Z", None, {"authorization": f"Bearer {tok}"}); print(r.status, r.body)
    r = stack.request("GET", "/mgt/v1/metrics", None, K); print(r.status, r.body)
    r = stack.request("PATCH", "/mgt/v1/metrics/tokens", {"name": "Tokens"}, K); print(r.status, r.body)
    r = stack.request("DELETE", "/mgt/v1/metrics/tokens", None, K); print(r.status, r.body)
