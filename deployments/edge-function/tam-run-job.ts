// tam-run-job: the app's Supabase Edge Function, changed to hand long-running steps to the
// TAM pipeline's dispatch webhook (deployments/webhook/) instead of running them here.
//
// Why: an Edge Function lives ~150 s; qualifying 150 companies alone takes ~7 minutes.
// The function checks who is calling, marks the job running, POSTs {jobId, jobType, projectId}
// to `${GTM_SYSTEM_URL}/api/tam/run` with `x-api-key: SERVICE_API_KEY`, and returns. A Prefect
// worker runs the step and keeps tam_job_queue up to date; the frontend keeps polling
// tam_job_queue exactly as before.
//
// Who may start a job (docs/contracts.md, "Tenancy and security" and "Who moves the job row"):
// Supabase's JWT gate lets the public anon key through,
// so the function itself verifies the caller's user JWT (auth.getUser), reads the job through a
// client that carries that JWT (RLS shows a user only jobs of projects they own), and only then
// uses the service role to move the row: pending / failed / cancelled → running, never from
// completed, with a compare-and-set.
//
// Environment (supabase secrets set ...):
//   GTM_SYSTEM_URL      base URL of the webhook, https:// (http:// only for localhost)
//   SERVICE_API_KEY     the same value the webhook has in SERVICE_API_KEY
//   ALLOWED_ORIGINS     comma-separated browser origins allowed to call, e.g.
//                       https://app.example.com,https://staging.example.com (no `*`)
//   SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY   provided by Supabase
//   PORT, HOST          only when run directly with `deno run` (tests, local use)
//
// Drop-in: the app's index.ts does `import { handler } from "./tam-run-job.ts";
// Deno.serve(handler);` (the Deno.serve at the bottom runs only when this file is the entry).

import {
  createClient,
  isAuthRetryableFetchError,
  type SupabaseClient,
} from "npm:@supabase/supabase-js@2";

/** Job types the pipeline runs on Prefect (tam.models.JobType, which the webhook accepts). */
export const LONG_RUNNING_JOB_TYPES = new Set([
  "source_companies",
  "qualify",
  "find_contacts",
  "check_linkedin",
  "refine_discolike",
  "build_tam",
]);

/** The states a caller may start a job from (docs/contracts.md, "Who moves the job row"). */
export const STARTABLE_STATUSES = ["pending", "failed", "cancelled"] as const;

// The webhook bounds its own dispatch (its Prefect calls) to WEBHOOK_BUDGET_MS (its setting
// TAM_DISPATCH_BUDGET_S, 20 s by default); waiting a little longer means its own answer, success
// or a failure it recorded, arrives before we give up. Raise both together.
export const WEBHOOK_BUDGET_MS = 20_000;
export const DISPATCH_TIMEOUT_MS = 25_000;

const JOB_COLUMNS = "id, project_id, job_type, status, flow_run_id";
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);
const NO_SESSION = { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };

interface JobRow {
  id: string;
  project_id: string;
  job_type: string;
  status: string;
  flow_run_id: string | null;
}

export interface DispatchResult {
  ok: boolean;
  taskId?: string;
  error?: string;
}

interface Config {
  webhookUrl: string;
  serviceApiKey: string;
  supabaseUrl: string;
  anonKey: string;
  serviceRoleKey: string;
}

/** The function's settings, or the reason it must refuse every call (names, never values). */
export function readConfig(env: Deno.Env = Deno.env): Config | { error: string } {
  const missing = [
    "GTM_SYSTEM_URL",
    "SERVICE_API_KEY",
    "SUPABASE_URL",
    "SUPABASE_ANON_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
  ].filter((name) => !(env.get(name) ?? "").trim());
  if (missing.length) return { error: `Dispatch is not configured: set ${missing.join(", ")}` };
  const webhookUrl = env.get("GTM_SYSTEM_URL")!.trim().replace(/\/+$/, "");
  let url: URL;
  try {
    url = new URL(webhookUrl);
  } catch {
    return { error: "GTM_SYSTEM_URL is not a URL" };
  }
  const secure = url.protocol === "https:" ||
    (url.protocol === "http:" && LOOPBACK_HOSTS.has(url.hostname));
  if (!secure) {
    // NOTE: the request carries SERVICE_API_KEY; over plain http anyone on the path reads it.
    return { error: "GTM_SYSTEM_URL must be an https:// URL (http:// only for localhost)" };
  }
  return {
    webhookUrl,
    serviceApiKey: env.get("SERVICE_API_KEY")!,
    supabaseUrl: env.get("SUPABASE_URL")!,
    anonKey: env.get("SUPABASE_ANON_KEY")!,
    serviceRoleKey: env.get("SUPABASE_SERVICE_ROLE_KEY")!,
  };
}

// --- CORS ------------------------------------------------------------------------------------
/** ALLOWED_ORIGINS as exact origins; `*` is dropped (any site could then call with a user's token). */
export function allowedOrigins(env: Deno.Env = Deno.env): Set<string> {
  return new Set(
    (env.get("ALLOWED_ORIGINS") ?? "")
      .split(",")
      .map((origin) => origin.trim().replace(/\/+$/, "").toLowerCase())
      .filter((origin) => origin && origin !== "*"),
  );
}

function corsHeaders(origin: string | null): Record<string, string> {
  const headers: Record<string, string> = { Vary: "Origin" };
  if (origin) {
    headers["Access-Control-Allow-Origin"] = origin;
    headers["Access-Control-Allow-Headers"] = "authorization, x-client-info, apikey, content-type";
    headers["Access-Control-Allow-Methods"] = "POST, OPTIONS";
  }
  return headers;
}

function json(body: unknown, status: number, cors: Record<string, string>): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...cors, "Content-Type": "application/json" },
  });
}

// --- dispatch --------------------------------------------------------------------------------
async function postToWebhook(config: Config, job: JobRow): Promise<DispatchResult> {
  try {
    const response = await fetch(`${config.webhookUrl}/api/tam/run`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "x-api-key": config.serviceApiKey },
      body: JSON.stringify({ jobId: job.id, jobType: job.job_type, projectId: job.project_id }),
      signal: AbortSignal.timeout(DISPATCH_TIMEOUT_MS),
    });
    const text = await response.text();
    let answer: Record<string, unknown> = {};
    try {
      answer = text ? JSON.parse(text) : {};
    } catch {
      // Not JSON (a proxy's error page): the status line is the reason.
    }
    if (response.ok && typeof answer.taskId === "string") {
      return { ok: true, taskId: answer.taskId };
    }
    const reason = typeof answer.error === "string" ? answer.error : response.statusText;
    return {
      ok: false,
      error: response.ok
        ? "Dispatch webhook answered without a taskId"
        : `Dispatch webhook answered ${response.status}: ${reason}`,
    };
  } catch (e) {
    const name = e instanceof Error ? e.name : "Error";
    return {
      ok: false,
      error: name === "TimeoutError"
        ? `Dispatch webhook did not answer within ${DISPATCH_TIMEOUT_MS / 1000}s`
        : `Dispatch webhook unreachable: ${e instanceof Error ? e.message : String(e)}`,
    };
  }
}

/** POST the job to the webhook. On failure, a row this call moved to running says failed, unless
 * the webhook recorded a run for it meanwhile: `job` is the row as it was before the move. */
export async function dispatchLongRunningJob(
  service: SupabaseClient,
  config: Config,
  job: JobRow,
  { claimed }: { claimed: boolean },
): Promise<DispatchResult> {
  const result = await postToWebhook(config, job);
  if (result.ok || !claimed) return result;
  // A row that was already running belongs to its run, which this call did not start. Ours
  // fails only while its flow_run_id is still the one we saw (NULL on a first attempt): once
  // the webhook recorded a run (it may have started one, then failed to answer in time), that
  // run owns the row. `dispatch: true` lets such a run override the mark (docs/contracts.md,
  // "Who moves the job row"). The
  // webhook marks its own failures itself when it can; this covers requests it never saw.
  const mark = service
    .from("tam_job_queue")
    .update({
      status: "failed",
      result_summary: { error: result.error, dispatch: true },
      completed_at: new Date().toISOString(),
    })
    .eq("id", job.id)
    .eq("status", "running");
  const { error } =
    await (job.flow_run_id === null
      ? mark.is("flow_run_id", null)
      : mark.eq("flow_run_id", job.flow_run_id));
  if (error) console.error(`tam-run-job: could not mark job ${job.id} failed: ${error.message}`);
  return result;
}

// --- the job row -----------------------------------------------------------------------------
type Claim = { ok: true; claimed: boolean } | { ok: false; status: number; error: string };

/** pending / failed / cancelled → running, as one compare-and-set; running stays as it is. */
async function claimJob(service: SupabaseClient, job: JobRow): Promise<Claim> {
  if (job.status === "running") return { ok: true, claimed: false };
  if (job.status === "completed") return { ok: false, status: 409, error: "Job already completed" };
  const { data, error } = await service
    .from("tam_job_queue")
    .update({
      status: "running",
      progress: 0,
      // A new attempt, queued for a worker (tam/job_transitions.py QUEUED_STEP): not the last
      // attempt's outcome, claimed by no run yet (the reaper leaves it alone), queued since now.
      current_step: "queued",
      result_summary: null,
      completed_at: null,
      started_at: null,
      heartbeat_at: new Date().toISOString(),
    })
    .eq("id", job.id)
    .in("status", [...STARTABLE_STATUSES])
    .select("id, status");
  if (error) return { ok: false, status: 503, error: `Could not update the job: ${error.message}` };
  if (data && data.length === 1) return { ok: true, claimed: true };
  // Someone else moved the row between our read and our write: decide on what it is now.
  const { data: now, error: readError } = await service
    .from("tam_job_queue")
    .select(JOB_COLUMNS)
    .eq("id", job.id)
    .maybeSingle<JobRow>();
  if (readError) {
    return { ok: false, status: 503, error: `Could not read the job: ${readError.message}` };
  }
  if (now?.status === "running") return { ok: true, claimed: false };
  if (now?.status === "completed") {
    return { ok: false, status: 409, error: "Job already completed" };
  }
  return { ok: false, status: 409, error: "Job changed while starting; try again" };
}

// --- the handler -----------------------------------------------------------------------------
export async function handler(req: Request): Promise<Response> {
  const origin = req.headers.get("Origin");
  const allowed = origin !== null && allowedOrigins().has(origin.toLowerCase());
  const cors = corsHeaders(allowed ? origin : null);
  if (origin !== null && !allowed) {
    return json({ error: "Origin not allowed" }, 403, cors);
  }
  if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: cors });
  if (req.method !== "POST") return json({ error: "Method not allowed" }, 405, cors);
  try {
    return await startJob(req, cors);
  } catch (e) {
    // The browser still gets JSON it may read (with CORS), not the runtime's bare 500.
    console.error(`tam-run-job: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    return json({ error: "Internal error" }, 500, cors);
  }
}

async function startJob(req: Request, cors: Record<string, string>): Promise<Response> {
  const config = readConfig();
  if ("error" in config) {
    console.error(`tam-run-job: ${config.error}`);
    return json({ error: config.error }, 500, cors);
  }

  const token = (req.headers.get("Authorization") ?? "").match(/^Bearer\s+(\S+)$/i)?.[1];
  if (!token) return json({ error: "Missing Authorization: Bearer <user JWT>" }, 401, cors);
  const service = createClient(config.supabaseUrl, config.serviceRoleKey, { auth: NO_SESSION });
  const { data: auth, error: authError } = await service.auth.getUser(token);
  if (authError && isAuthRetryableFetchError(authError)) {
    // Auth itself is down (network, 5xx): not the caller's fault, and not a verdict on them.
    return json({ error: "Could not verify the session; try again" }, 503, cors);
  }
  if (authError || !auth?.user?.id) return json({ error: "Invalid or expired session" }, 401, cors);

  const body: unknown = await req.json().catch(() => null);
  const jobId = typeof body === "object" && body !== null
    ? (body as Record<string, unknown>).jobId
    : undefined;
  if (typeof jobId !== "string" || !UUID_PATTERN.test(jobId)) {
    return json({ error: "jobId is required (a UUID)" }, 400, cors);
  }

  // Read as the caller: RLS returns the row only when its project is theirs.
  const asCaller = createClient(config.supabaseUrl, config.anonKey, {
    auth: NO_SESSION,
    global: { headers: { Authorization: `Bearer ${token}` } },
  });
  const { data: job, error: readError } = await asCaller
    .from("tam_job_queue")
    .select(JOB_COLUMNS)
    .eq("id", jobId)
    .maybeSingle<JobRow>();
  if (readError) return json({ error: `Could not read the job: ${readError.message}` }, 503, cors);
  // NOTE: the same answer for a missing job and someone else's: ids do not leak.
  if (!job) return json({ error: "Job not found" }, 404, cors);

  if (!LONG_RUNNING_JOB_TYPES.has(job.job_type)) {
    // ... short job types keep running inline in the app's function, as before ...
    return json({ error: `Unsupported job type: ${job.job_type}` }, 400, cors);
  }
  const claim = await claimJob(service, job);
  if (!claim.ok) {
    return json({ success: false, jobId: job.id, error: claim.error }, claim.status, cors);
  }

  const dispatched = await dispatchLongRunningJob(service, config, job, claim);
  return dispatched.ok
    ? json({ success: true, jobId: job.id, taskId: dispatched.taskId }, 200, cors)
    : json({ success: false, jobId: job.id, error: dispatched.error }, 502, cors);
}

if (import.meta.main) {
  const port = Number(Deno.env.get("PORT") ?? "8000");
  const hostname = Deno.env.get("HOST") ?? "0.0.0.0";
  Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) =>
      console.log(`tam-run-job listening on http://${hostname}:${port}/`),
  }, handler);
}
