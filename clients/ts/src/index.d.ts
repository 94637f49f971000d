export { BillingError, createRestClient } from "./rest.js";
export * from "./gen/billing/v1/catalog_pb.js";
export * from "./gen/billing/v1/checkout_pb.js";
export * from "./gen/billing/v1/credit_pb.js";
export * from "./gen/billing/v1/errors_pb.js";
export * from "./gen/billing/v1/payment_pb.js";
export * from "./gen/billing/v1/token_pb.js";
export * from "./gen/billing/v1/usage_pb.js";
