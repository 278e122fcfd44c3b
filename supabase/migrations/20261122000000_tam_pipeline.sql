-- TAM pipeline tables for Supabase.
--
-- The app's tables may already exist with their original columns, so every step is
-- idempotent: tables are created only when missing, new columns are added when missing,
-- constraints are dropped and re-added, policies are replaced. Applying this twice is safe.
-- tam/schema.py declares the same tables for SQLite and plain Postgres;
-- tests/test_schema_agrees.py proves the two agree.

-- ---------------------------------------------------------------------------------------
-- Tables, with the columns the app has always had.
-- ---------------------------------------------------------------------------------------
create table if not exists public.tam_projects (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  status text not null default 'sourcing',
  icp_profile jsonb default '{}'::jsonb,
  created_at timestamptz not null default now()
);

create table if not exists public.tam_companies (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null
    constraint tam_companies_project_id_fkey references public.tam_projects (id) on delete cascade,
  name text not null,
  domain text,
  linkedin_url text,
  source text,
  industry text,
  employee_count text,
  location text,
  description text,
  digital_footprint_score double precision,
  similarity_score double precision,
  qualification_status text not null default 'pending',
  qualification_reason text,
  feedback text,
  raw_data jsonb default '{}'::jsonb,
  created_at timestamptz not null default now()
);

create table if not exists public.tam_contacts (
  id uuid primary key default gen_random_uuid(),
  company_id uuid not null
    constraint tam_contacts_company_id_fkey references public.tam_companies (id) on delete cascade,
  project_id uuid not null
    constraint tam_contacts_project_id_fkey references public.tam_projects (id) on delete cascade,
  first_name text,
  last_name text,
  title text,
  linkedin_url text,
  email text,
  email_status text,
  phone text,
  source text,
  raw_data jsonb default '{}'::jsonb,
  linkedin_last_post_date timestamptz,
  linkedin_active boolean,
  created_at timestamptz not null default now()
);

create table if not exists public.tam_job_queue (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null
    constraint tam_job_queue_project_id_fkey references public.tam_projects (id) on delete cascade,
  job_type text not null,
  status text not null default 'pending',
  progress integer not null default 0,
  result_summary jsonb,
  created_at timestamptz not null default now(),
  completed_at timestamptz
);

-- ---------------------------------------------------------------------------------------
-- Columns the pipeline adds.
-- ---------------------------------------------------------------------------------------
alter table public.tam_projects add column if not exists auto_refine boolean not null default false;

alter table public.tam_contacts add column if not exists linkedin_checked_at timestamptz;

alter table public.tam_job_queue add column if not exists flow_run_id uuid;
alter table public.tam_job_queue add column if not exists current_step text;
alter table public.tam_job_queue add column if not exists started_at timestamptz;
alter table public.tam_job_queue add column if not exists heartbeat_at timestamptz;
alter table public.tam_job_queue add column if not exists done_count integer;
alter table public.tam_job_queue add column if not exists total_count integer;
alter table public.tam_job_queue add column if not exists cost_usd double precision;
alter table public.tam_job_queue add column if not exists attempt integer not null default 0;

-- ---------------------------------------------------------------------------------------
-- Check constraints. Added NOT VALID and validated below, so rows an older app version
-- wrote outside these values do not block the migration (new rows are always checked).
-- ---------------------------------------------------------------------------------------
-- The original job status check did not allow 'cancelled'; drop it whatever its name.
do $$
declare
  c record;
begin
  for c in
    select conname from pg_constraint
    where conrelid = 'public.tam_job_queue'::regclass
      and contype = 'c'
      and conname <> 'tam_job_queue_status_check'
      and pg_get_constraintdef(oid) ~ '\mstatus\M'
  loop
    execute format('alter table public.tam_job_queue drop constraint %I', c.conname);
  end loop;
end $$;

alter table public.tam_job_queue drop constraint if exists tam_job_queue_status_check;
alter table public.tam_job_queue add constraint tam_job_queue_status_check
  check (status in ('pending', 'running', 'completed', 'failed', 'cancelled')) not valid;

alter table public.tam_job_queue drop constraint if exists tam_job_queue_progress_check;
alter table public.tam_job_queue add constraint tam_job_queue_progress_check
  check (progress >= 0 and progress <= 100) not valid;

alter table public.tam_companies drop constraint if exists tam_companies_qualification_status_check;
alter table public.tam_companies add constraint tam_companies_qualification_status_check
  check (qualification_status in ('pending', 'qualified', 'disqualified')) not valid;

alter table public.tam_companies drop constraint if exists tam_companies_feedback_check;
alter table public.tam_companies add constraint tam_companies_feedback_check
  check (feedback is null or feedback in ('liked', 'disliked')) not valid;

do $$
declare
  c record;
begin
  for c in
    select conrelid::regclass as tbl, conname from pg_constraint
    where conname in (
      'tam_job_queue_status_check', 'tam_job_queue_progress_check',
      'tam_companies_qualification_status_check', 'tam_companies_feedback_check'
    ) and not convalidated
  loop
    begin
      execute format('alter table %s validate constraint %I', c.tbl, c.conname);
    exception when check_violation then
      raise warning '% has rows that break %; new rows are still checked', c.tbl, c.conname;
    end;
  end loop;
end $$;

-- ---------------------------------------------------------------------------------------
-- Unique keys (the store's upserts target exactly these) and indexes.
-- A project that already holds duplicate domains or LinkedIn URLs must be cleaned first.
-- ---------------------------------------------------------------------------------------
create unique index if not exists tam_companies_project_domain_key
  on public.tam_companies (project_id, domain);
create unique index if not exists tam_contacts_project_linkedin_key
  on public.tam_contacts (project_id, linkedin_url);

create index if not exists tam_companies_project_status_idx
  on public.tam_companies (project_id, qualification_status, id);
create index if not exists tam_contacts_company_idx on public.tam_contacts (company_id);
create index if not exists tam_contacts_project_id_idx on public.tam_contacts (project_id, id);
create index if not exists tam_job_queue_status_heartbeat_idx
  on public.tam_job_queue (status, heartbeat_at);
create index if not exists tam_job_queue_project_idx on public.tam_job_queue (project_id);

-- ---------------------------------------------------------------------------------------
-- Row level security: signed-in users read; only the service role (the pipeline, the
-- Edge Functions) writes.
-- ---------------------------------------------------------------------------------------
alter table public.tam_projects enable row level security;
alter table public.tam_companies enable row level security;
alter table public.tam_contacts enable row level security;
alter table public.tam_job_queue enable row level security;

drop policy if exists tam_projects_read on public.tam_projects;
create policy tam_projects_read on public.tam_projects
  for select to authenticated using (true);
drop policy if exists tam_projects_service_write on public.tam_projects;
create policy tam_projects_service_write on public.tam_projects
  for all to service_role using (true) with check (true);

drop policy if exists tam_companies_read on public.tam_companies;
create policy tam_companies_read on public.tam_companies
  for select to authenticated using (true);
drop policy if exists tam_companies_service_write on public.tam_companies;
create policy tam_companies_service_write on public.tam_companies
  for all to service_role using (true) with check (true);

drop policy if exists tam_contacts_read on public.tam_contacts;
create policy tam_contacts_read on public.tam_contacts
  for select to authenticated using (true);
drop policy if exists tam_contacts_service_write on public.tam_contacts;
create policy tam_contacts_service_write on public.tam_contacts
  for all to service_role using (true) with check (true);

drop policy if exists tam_job_queue_read on public.tam_job_queue;
create policy tam_job_queue_read on public.tam_job_queue
  for select to authenticated using (true);
drop policy if exists tam_job_queue_service_write on public.tam_job_queue;
create policy tam_job_queue_service_write on public.tam_job_queue
  for all to service_role using (true) with check (true);
