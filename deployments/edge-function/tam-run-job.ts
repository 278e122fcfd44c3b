// tam-run-job: the app's Supabase Edge Function, changed to hand long-running steps to the
// TAM pipeline's dispatch webhook (deployments/webhook.py) instead of running them here.
//
// Why: an Edge Function lives ~150 s; qualifying 150 companies alone takes ~7 minutes.
// The function now marks the job running, POSTs {jobId, jobType, projectId} to
// `${GTM_SYSTEM_URL}/api/tam/run` with `x-api-key: SERVICE_API_KEY`, and returns. A
// Prefect worker runs the step and keeps tam_job_queue up to date; the frontend keeps
// polling tam_job_queue exactly as before.
//
// Environment (supabase secrets set ...):
//   GTM_SYSTEM_URL      base URL of the webhook, e.g. https://tam.example.com (no trailing /)
//   SERVICE_API_KEY     the same value the webhook has in SERVICE_API_KEY
//   SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY   provided by Supabase to every function
//
// Drop-in: `dispatchLongRunningJob` is the change; the handler below shows where it goes.

import { createClient, type SupabaseClient } from "jsr:@supabase/supabase-js@2";

/** Job types the pipeline runs on Prefect (the webhook's FLOWS keys). */
export const LONG_RUNNING_JOB_TYPES = new Set([
  "source_companies",
  "qualify",
  "find_contacts",
  "check_linkedin",
  "refine_discolike",
  "build_tam",
]);

// The webhook answers within seconds; a hung connection must not eat the function's budget.
const DISPATCH_TIMEOUT_MS = 30_000;

interface JobRow {
  id: string;
  project_id: string;
  job_type: string;
  status: string;
}

export interface DispatchResult {
  ok: boolean;
  taskId?: string;
  error?: string;
}

/** POST the job to the webhook; on any failure the job row says failed, with the reason. */
export async function dispatchLongRunningJob(
  supabase: SupabaseClient,
  job: JobRow,
): Promise<DispatchResult> {
  const baseUrl = (Deno.env.get("GTM_SYSTEM_URL") ?? "").replace(/\/+$/, "");
  const serviceKey = Deno.env.get("SERVICE_API_KEY") ?? "";
  let error: string;
  if (!baseUrl || !serviceKey) {
    error = "Dispatch is not configured: set GTM_SYSTEM_URL and SERVICE_API_KEY";
  } else {
    try {
      const response = await fetch(`${baseUrl}/api/tam/run`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "x-api-key": serviceKey },
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
      error = response.ok
        ? "Dispatch webhook answered without a taskId"
        : `Dispatch webhook answered ${response.status}: ${reason}`;
    } catch (e) {
      const name = e instanceof Error ? e.name : "Error";
      error = name === "TimeoutError"
        ? `Dispatch webhook did not answer within ${DISPATCH_TIMEOUT_MS / 1000}s`
        : `Dispatch webhook unreachable: ${e instanceof Error ? e.message : String(e)}`;
    }
  }
  // Compare-and-set on an active status: never overwrite a state the pipeline already wrote.
  await supabase
    .from("tam_job_queue")
    .update({
      status: "failed",
      result_summary: { error },
      completed_at: new Date().toISOString(),
    })
    .eq("id", job.id)
    .in("status", ["pending", "running"]);
  return { ok: false, error };
}

const corsHeaders = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
};

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, "Content-Type": "application/json" },
  });
}

Deno.serve(async (req: Request): Promise<Response> => {
  if (req.method === "OPTIONS") return new Response("ok", { headers: corsHeaders });

  const supabase = createClient(
    Deno.env.get("SUPABASE_URL")!,
    Deno.env.get("SUPABASE_SERVICE_ROLE_KEY")!,
  );
  const { jobId } = await req.json().catch(() => ({ jobId: undefined }));
  if (typeof jobId !== "string") return json({ error: "jobId is required" }, 400);

  const { data: job, error: readError } = await supabase
    .from("tam_job_queue")
    .select("id, project_id, job_type, status")
    .eq("id", jobId)
    .single<JobRow>();
  if (readError || !job) return json({ error: "Job not found" }, 404);

  await supabase
    .from("tam_job_queue")
    .update({ status: "running", progress: 0 })
    .eq("id", job.id);

  if (LONG_RUNNING_JOB_TYPES.has(job.job_type)) {
    const dispatched = await dispatchLongRunningJob(supabase, job);
    return dispatched.ok
      ? json({ success: true, jobId: job.id, taskId: dispatched.taskId })
      : json({ success: false, jobId: job.id, error: dispatched.error }, 502);
  }

  // ... short job types keep running inline here, as before ...
  return json({ error: `Unsupported job type: ${job.job_type}` }, 400);
});
