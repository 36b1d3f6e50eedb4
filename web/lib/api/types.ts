// Names for the generated API schema types (lib/api/schema.d.ts, from /api/v1/openapi.json).
import type { components } from "./schema";

type Schemas = components["schemas"];

export type Model = Schemas["ModelOut"];
export type ModelVersion = Schemas["VersionOut"];
export type ModelPatch = Schemas["ModelPatchIn"];
export type StageChange = Schemas["StageChangeOut"];
export type RollbackResult = Schemas["RollbackOut"];
export type StateDict = Schemas["StateDictOut"];
export type TensorSpec = Schemas["TensorSpecOut"];
export type ApiKey = Schemas["ApiKeyOut"];
export type ApiKeyCreated = Schemas["ApiKeyCreatedOut"];
export type Me = Schemas["MeOut"];
export type TokenPair = Schemas["TokenPairOut"];

export type Stage = "none" | "staging" | "production" | "archived";
export type Role = "viewer" | "member" | "maintainer" | "admin";

/** A job as GET /api/v1/jobs answers (selectors.job_snapshot; the endpoint declares no schema). */
export interface Job {
  id: number;
  kind: string;
  state: string;
  params: Record<string, unknown>;
  progress: Record<string, unknown> | null;
  result: Record<string, unknown> | null;
  error: string | null;
  attempts?: number;
  cancel_requested?: boolean;
  model: string | null;
  dataset_id: number | null;
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
}

export interface DriftAlert {
  id: number;
  model: string;
  version: number;
  created_at: string;
  drifted_features: string[];
  threshold: number;
  sample_count: number;
}

export interface Traffic {
  model: string;
  requests: number;
  errors: number;
  rate_per_second: number;
}

export interface Architecture {
  name: string;
  config_schema: JsonSchema;
}

export interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMaximum?: number;
  description?: string;
}

export interface TensorInfoSpec {
  name: string;
  datatype: string;
  shape: number[];
}

export interface Signature {
  inputs: TensorInfoSpec[];
  outputs: TensorInfoSpec[];
}

export interface Readiness {
  status: string;
  database?: string;
  redis?: string;
  storage?: string;
  draining?: boolean;
}

export type Dataset = Schemas["DatasetOut"];

/** A column of a dataset's profile (inference.tabular.ColumnProfile.to_dict). */
export interface DatasetColumn {
  name: string;
  kind: string;
  count: number;
  missing: number;
  distinct: number;
  distinct_capped?: boolean;
  min: number | null;
  max: number | null;
  mean: number | null;
  std: number | null;
  top: { value: string; count: number }[];
}
