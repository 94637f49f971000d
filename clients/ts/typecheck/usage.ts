// Compiled by tests/clients/test_ts_client.py with tsc --strict: the client's types hold.
import {
  BillingError,
  CatalogService,
  CheckoutService,
  TokenService,
  createRestClient,
} from "../src/index.js";

export async function buy(baseUrl: string, apiKey: string, lookupKey: string): Promise<string> {
  const backend = createRestClient(TokenService, { baseUrl, apiKey });
  const issued = await backend.issueToken({ principalId: "user-1", scopes: ["checkout"] });
  const token: string = issued.accessToken;
  const catalog = createRestClient(CatalogService, { baseUrl, token });
  const { products } = await catalog.listProducts({});
  const productId: string = products[0].productId;
  const { prices } = await catalog.listPrices({ productId });
  const amount: bigint = prices[0].unitAmount;
  const checkout = createRestClient(CheckoutService, { baseUrl, token });
  try {
    const session = await checkout.createCheckoutSession({
      items: [{ price: { case: "lookupKey", value: lookupKey }, quantity: 1 }],
      successUrl: "https://app.example/ok",
      requestId: `buy-${amount}`,
    });
    if (session.nextAction.case === "portal") return session.nextAction.value.url;
    return session.url;
  } catch (err) {
    if (err instanceof BillingError && err.reason === "FIELD_UNKNOWN") return err.metadata.field;
    throw err;
  }
}
