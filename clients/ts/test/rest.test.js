// Through Envoy: issue a token (service key, /mgt), list the catalog and create a checkout
// (bearer token, /api). BILLING_URL, BILLING_SERVICE_KEY and BILLING_LOOKUP_KEY come from the
// pytest test that starts the stack (tests/clients/test_ts_client.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BillingError,
  CatalogService,
  CheckoutService,
  TokenService,
  createRestClient,
} from "../src/index.js";

const baseUrl = process.env.BILLING_URL;
const apiKey = process.env.BILLING_SERVICE_KEY;
const lookupKey = process.env.BILLING_LOOKUP_KEY;

test("issue a token, list the catalog, create a checkout", { skip: !baseUrl }, async () => {
  const backend = createRestClient(TokenService, { baseUrl, apiKey });
  const issued = await backend.issueToken({
    principalId: "ts-user-1",
    scopes: ["checkout", "billing:read", "credits:read"],
  });
  assert.match(issued.billingAccountId, /^acct_/);
  assert.equal(issued.tokenType, "Bearer");

  const token = issued.accessToken;
  const catalog = createRestClient(CatalogService, { baseUrl, token });
  const { products } = await catalog.listProducts({});
  assert.ok(products.length > 0, "the catalog lists products");
  const prices = [];
  for (const product of products) {
    prices.push(...(await catalog.listPrices({ productId: product.productId })).prices);
  }
  const price = prices.find((p) => p.lookupKey === lookupKey);
  assert.ok(price, `price ${lookupKey} is listed`);
  assert.equal(typeof price.unitAmount, "bigint", "int64 arrives as a JSON string, parsed to bigint");

  const checkout = createRestClient(CheckoutService, { baseUrl, token });
  const session = await checkout.createCheckoutSession({
    items: [{ price: { case: "lookupKey", value: lookupKey }, quantity: 1 }],
    successUrl: "https://app.example/ok",
    requestId: "ts-checkout-1",
  });
  assert.equal(session.nextAction.case, "session", "a checkout, not a portal redirect");
  assert.ok(session.nextAction.value.checkoutSessionId, "the session has an id");
  assert.match(session.url, /^http/);
});

test("errors carry the reason; an unknown field is FIELD_UNKNOWN", { skip: !baseUrl }, async () => {
  const backend = createRestClient(TokenService, { baseUrl, apiKey: "not-a-key" });
  await assert.rejects(backend.issueToken({ principalId: "x" }), (err) => {
    assert.ok(err instanceof BillingError);
    assert.equal(err.status, 401);
    assert.equal(err.reason, "SERVICE_KEY_INVALID");
    return true;
  });
  const raw = await fetch(`${baseUrl}/mgt/v1/token/issue`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": apiKey },
    body: JSON.stringify({ principal_id: "x", expiresAt: "2030-01-01T00:00:00Z" }),
  });
  const err = new BillingError(raw.status, await raw.json());
  assert.equal(err.status, 400);
  assert.equal(err.reason, "FIELD_UNKNOWN");
  assert.equal(err.metadata.field, "expiresAt");
});

test("a path value is one URL segment: '/', '.' and '..' cannot reach another path", async () => {
  const { CatalogService, EntitlementService } = await import("../src/index.js");
  const sent = [];
  const fetch = async (url, init) => {
    sent.push(`${init.method} ${new URL(url).pathname}`);
    return new Response("{}", { status: 200 });
  };
  const backend = createRestClient(CatalogService, { baseUrl: "http://billing.test", apiKey: "k", fetch });
  await backend.getProduct({ productId: "../../accounts" });
  await backend.getProduct({ productId: "a/b?c#d" });
  const browser = createRestClient(EntitlementService, { baseUrl: "http://billing.test", token: "t", fetch });
  await browser.checkEntitlement({ feature: "../../../mgt/v1/accounts" });
  assert.deepEqual(sent, [
    "GET /mgt/v1/catalog/products/..%2F..%2Faccounts",
    "GET /mgt/v1/catalog/products/a%2Fb%3Fc%23d",
    "GET /api/v1/entitlements/..%2F..%2F..%2Fmgt%2Fv1%2Faccounts",
  ]);
  // A URL cannot carry "." or ".." as a segment (any spelling is resolved away): refused.
  for (const productId of [".", ".."]) {
    await assert.rejects(backend.getProduct({ productId }), TypeError);
  }
  assert.equal(sent.length, 3, "nothing was sent for them");
});
