// The API's error envelope {"error": {"code", "message", "details"}} as one typed error, carrying the
// request id (X-Request-ID) so every error the console shows can be quoted in a report.

export interface ApiErrorInfo {
  status: number;
  code: string;
  message: string;
  details: unknown;
  requestId: string | null;
}

interface FieldDetail {
  field?: unknown;
  loc?: unknown;
  msg?: unknown;
}

export class ApiError extends Error implements ApiErrorInfo {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  readonly requestId: string | null;

  constructor(info: ApiErrorInfo) {
    super(info.message);
    this.name = "ApiError";
    this.status = info.status;
    this.code = info.code;
    this.details = info.details;
    this.requestId = info.requestId;
  }

  static async fromResponse(response: Response): Promise<ApiError> {
    const requestId = response.headers.get("x-request-id");
    let text = "";
    try {
      text = await response.text();
    } catch {
      // The body could not be read; the status still says what happened.
    }
    return new ApiError(parseErrorBody(response.status, text, requestId));
  }

  static network(error: unknown): ApiError {
    const reason = error instanceof Error ? error.message : String(error);
    return new ApiError({
      status: 0,
      code: "network_error",
      message: `The server could not be reached (${reason}). Check your connection and try again.`,
      details: null,
      requestId: null,
    });
  }

  /** Field name -> message, from the envelope's details (`[{field, msg}]`). */
  fieldErrors(): Record<string, string> {
    return fieldErrors(this.details);
  }

  toJSON(): ApiErrorInfo {
    return { status: this.status, code: this.code, message: this.message, details: this.details, requestId: this.requestId };
  }
}

export function fieldErrors(details: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(details)) return out;
  for (const item of details as FieldDetail[]) {
    if (!item || typeof item !== "object") continue;
    let field = typeof item.field === "string" ? item.field : "";
    if (!field && Array.isArray(item.loc)) {
      field = item.loc.filter((part) => !["body", "payload", "query", "path"].includes(String(part))).join(".");
    }
    const message = typeof item.msg === "string" ? item.msg : "invalid value";
    if (field && !(field in out)) out[field] = message;
  }
  return out;
}

const STATUS_TEXT: Record<number, string> = {
  400: "The request was not understood.",
  401: "You are not signed in.",
  403: "You are not allowed to do that.",
  404: "Not found.",
  409: "That conflicts with the current state.",
  413: "The upload is larger than the server accepts.",
  422: "Some values are not valid.",
  429: "Too many requests; wait a moment and try again.",
  500: "The server failed; quote the request id when reporting it.",
  502: "The server is not answering.",
  503: "The service is unavailable; try again shortly.",
  504: "The server took too long to answer.",
};

/** Reads an error body: the API envelope, V2's {"error": "..."}, or anything else (an HTML error page). */
export function parseErrorBody(status: number, text: string, requestId: string | null): ApiErrorInfo {
  const fallback = STATUS_TEXT[status] ?? `The server answered ${status}.`;
  try {
    const body: unknown = JSON.parse(text);
    if (body && typeof body === "object" && "error" in body) {
      const error = (body as { error: unknown }).error;
      if (error && typeof error === "object") {
        const e = error as { code?: unknown; message?: unknown; details?: unknown };
        return {
          status,
          code: typeof e.code === "string" ? e.code : "error",
          message: typeof e.message === "string" && e.message ? e.message : fallback,
          details: e.details ?? null,
          requestId,
        };
      }
      if (typeof error === "string") return { status, code: "error", message: error, details: null, requestId };
    }
  } catch {
    // Not JSON.
  }
  return { status, code: status === 0 ? "network_error" : "error", message: fallback, details: null, requestId };
}
