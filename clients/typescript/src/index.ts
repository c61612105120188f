/**
 * @allmine/auth-client: a typed client of the Allmine auth API.
 *
 * The types in `schema.d.ts` are generated from the service's OpenAPI spec (`make types`); requests go
 * through openapi-fetch. Every answer of the API is the envelope
 * `{isSuccess, statusCode, data, errors, timestamp}`: each method returns `data`, typed, and throws an
 * `AllmineAuthError` carrying `statusCode`, `errors` (the error text first, then `field: message`
 * lines) and `retryAfter` (seconds, on 429 and 503) for any other answer.
 */
import createClient, { type Client, type ClientOptions } from "openapi-fetch";

import type { components, operations, paths } from "./schema";

export type { components, operations, paths };

type Schemas = components["schemas"];
export type ErrorEnvelope = Schemas["ErrorEnvelope"];
export type SendOtpRequest = Schemas["Phone"];
export type SendOtpEmailRequest = Schemas["Email"];
export type VerifyOtpRequest = Schemas["VerifyPhone"];
export type VerifyOtpEmailRequest = Schemas["VerifyEmail"];
export type RefreshRequest = Schemas["Refresh"];
export type CompleteRegistrationRequest = Schemas["CompleteRegistration"];
export type LiveActivityRequest = Schemas["LiveActivityBody"];
export type PhoneCodeSent = Schemas["PhoneCodeSent"];
export type EmailCodeSent = Schemas["EmailCodeSent"];
export type Login = Schemas["Login"];
export type TokenPair = Schemas["TokenPair"];
export type User = Schemas["User"];
export type Session = Schemas["Session"];
export type Revoked = Schemas["Revoked"];
export type LiveActivity = Schemas["LiveActivity"];
export type DeletedActivity = Schemas["DeletedActivity"];
export type LogoutScope = NonNullable<operations["logout"]["parameters"]["query"]>["scope"];

/** An answer other than success: the envelope's status and texts. */
export class AllmineAuthError extends Error {
  readonly statusCode: number;
  readonly errors: string[];
  /** Seconds to wait before trying again (`Retry-After`), when the service says. */
  readonly retryAfter: number | null;

  constructor(statusCode: number, errors: string[], retryAfter: number | null = null) {
    super(`${statusCode}: ${errors.join("; ")}`);
    this.name = "AllmineAuthError";
    this.statusCode = statusCode;
    this.errors = errors;
    this.retryAfter = retryAfter;
  }
}

export interface AuthClientOptions extends ClientOptions {
  /** The API's root, e.g. `https://api.allmine.app` (the paths start with `/api/v1`). */
  baseUrl: string;
  /** The access token to send as `Authorization: Bearer ...`, read before every request. */
  accessToken?: () => string | null | undefined;
}

type Answer<T> = { data?: { data: T }; error?: unknown; response: Response };

/** The envelope's `data`, or an `AllmineAuthError` for an error envelope (or a body that isn't one). */
export async function unwrap<T>(call: Promise<Answer<T>>): Promise<T> {
  const { data, error, response } = await call;
  if (data !== undefined && response.ok) {
    return data.data;
  }
  const retry = response.headers.get("Retry-After");
  const retryAfter = retry === null ? null : Number(retry);
  if (isErrorEnvelope(error)) {
    throw new AllmineAuthError(error.statusCode, error.errors, retryAfter);
  }
  throw new AllmineAuthError(response.status, [response.statusText || "Unexpected answer"], retryAfter);
}

function isErrorEnvelope(body: unknown): body is ErrorEnvelope {
  return (
    typeof body === "object" &&
    body !== null &&
    (body as ErrorEnvelope).isSuccess === false &&
    typeof (body as ErrorEnvelope).statusCode === "number" &&
    Array.isArray((body as ErrorEnvelope).errors)
  );
}

/** A client with one method per operation (named as the spec's operationIds). */
export function createAuthClient(options: AuthClientOptions) {
  const { accessToken, ...clientOptions } = options;
  const client: Client<paths> = createClient<paths>(clientOptions);
  if (accessToken) {
    client.use({
      onRequest({ request }) {
        const token = accessToken();
        if (token && !request.headers.has("Authorization")) {
          request.headers.set("Authorization", `Bearer ${token}`);
        }
        return request;
      },
    });
  }
  return {
    /** The openapi-fetch client itself, for anything the methods don't cover. */
    raw: client,
    sendOtp: (body: SendOtpRequest) => unwrap(client.POST("/api/v1/auth/send-otp", { body })),
    sendOtpEmail: (body: SendOtpEmailRequest) => unwrap(client.POST("/api/v1/auth/send-otp-email", { body })),
    verifyOtp: (body: VerifyOtpRequest) => unwrap(client.POST("/api/v1/auth/verify-otp", { body })),
    verifyOtpEmail: (body: VerifyOtpEmailRequest) =>
      unwrap(client.POST("/api/v1/auth/verify-otp-email", { body })),
    refreshToken: (body: RefreshRequest) => unwrap(client.POST("/api/v1/auth/refresh", { body })),
    logout: (scope?: LogoutScope) =>
      unwrap(client.POST("/api/v1/auth/logout", { params: { query: scope ? { scope } : {} } })),
    getMe: () => unwrap(client.GET("/api/v1/auth/me")),
    completeRegistration: (body: CompleteRegistrationRequest) =>
      unwrap(client.POST("/api/v1/auth/complete-registration", { body })),
    listSessions: () => unwrap(client.GET("/api/v1/auth/sessions")),
    deleteSession: (sessionId: string) =>
      unwrap(client.DELETE("/api/v1/auth/sessions/{session_id}", { params: { path: { session_id: sessionId } } })),
    requestAccountDeletion: () => unwrap(client.POST("/api/v1/auth/account/deletion")),
    cancelAccountDeletion: () => unwrap(client.DELETE("/api/v1/auth/account/deletion")),
    listLiveActivities: () => unwrap(client.GET("/api/v1/live-activities")),
    putLiveActivity: (activityId: string, body: LiveActivityRequest) =>
      unwrap(
        client.PUT("/api/v1/live-activities/{activity_id}", { params: { path: { activity_id: activityId } }, body }),
      ),
    deleteLiveActivity: (activityId: string) =>
      unwrap(client.DELETE("/api/v1/live-activities/{activity_id}", { params: { path: { activity_id: activityId } } })),
  };
}

export type AuthClient = ReturnType<typeof createAuthClient>;
