import type { DescMethodUnary, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";

export interface RestOptions {
  /** Envoy's REST address, e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** A bearer token from TokenService.IssueToken: calls go to /api/v1 (browsers). */
  token?: string;
  /** A service key (x-api-key): calls go to /mgt/v1 (backends only; never ship it to a browser). */
  apiKey?: string;
  fetch?: typeof fetch;
}

export interface CallOptions {
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** One async function per unary method, typed by the generated request and response messages. */
export type RestClient<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary<infer I, infer O>
    ? (request?: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>
    : never;
};

export declare function createRestClient<S extends DescService>(
  service: S,
  options: RestOptions,
): RestClient<S>;

/** google.rpc.Status of an error answer, with the ErrorInfo reason and metadata. */
export declare class BillingError extends Error {
  status: number;
  code: number;
  reason?: string;
  metadata: Record<string, string>;
  body: unknown;
}
