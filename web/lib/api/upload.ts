// Multipart upload with progress (fetch has no upload progress): XMLHttpRequest, with the same token and
// error handling as the API client.
import { ApiError, parseErrorBody } from "@/lib/api/errors";
import { getAccessToken } from "@/lib/auth/token";

export interface UploadProgress {
  loaded: number;
  total: number;
}

function send(url: string, form: FormData, token: string, onProgress: (p: UploadProgress) => void, signal?: AbortSignal) {
  return new Promise<{ status: number; text: string; requestId: string | null }>((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("authorization", `Bearer ${token}`);
    xhr.setRequestHeader("accept", "application/json");
    xhr.upload.onprogress = (event) => onProgress({ loaded: event.loaded, total: event.lengthComputable ? event.total : 0 });
    xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText, requestId: xhr.getResponseHeader("x-request-id") });
    xhr.onerror = () => reject(ApiError.network(new Error("the upload was interrupted")));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(form);
  });
}

export async function upload<T>(url: string, form: FormData, onProgress: (p: UploadProgress) => void, signal?: AbortSignal): Promise<T> {
  let answer = await send(url, form, await getAccessToken({ minValidityMs: 120_000 }), onProgress, signal);
  if (answer.status === 401) answer = await send(url, form, await getAccessToken({ force: true }), onProgress, signal);
  if (answer.status < 200 || answer.status >= 300) throw new ApiError(parseErrorBody(answer.status, answer.text, answer.requestId));
  return JSON.parse(answer.text) as T;
}
