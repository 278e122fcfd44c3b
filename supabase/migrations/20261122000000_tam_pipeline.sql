-- TAM pipeline tables for Supabase.
--
-- The app's tables may already exist with their original columns, so every step is
-- idempotent: tables are created only when missing, new columns are added when missing,
-- constraints are dropped and re-added. Applying this twice is safe.
-- tam/schema.py declares the same tables for SQLite and plain Postgres;
-- tests/test_schema_agrees.py proves the two agree.
--
-- Who may read and write which rows is 20261202000000_tam_tenancy.sql's job. An earlier
-- version of this file created `using (true)` read policies here; that file removes them.
--
-- One transaction: an error anywhere (duplicate rows below, for one) leaves the database
-- exactly as it was. `supabase db push` runs each file as one transaction, the dashboard's
-- SQL editor sends it as one query (which Postgres runs as one transaction), and with psql:
--   psql -v ON_ERROR_STOP=1 -1 -f supabase/migrations/20261122000000_tam_pipeline.sql
-- NOTE: no begin/commit in the file: a COMMIT inside a migration ends the CLI's own
-- transaction early, and `supabase db push` then skips what follows (supabase/cli#5047).

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
-- A project that already holds duplicate domains or LinkedIn URLs must be cleaned first:
-- the migration refuses, naming them, rather than failing on an anonymous index build.
-- ---------------------------------------------------------------------------------------
do $$
declare
  blockers text;
  groups integer;
begin
  if to_regclass('public.tam_companies_project_domain_key') is null then
    select count(*), string_agg(format('project %s domain %s (%s rows)', project_id, domain, n),
                                '; ' order by project_id, domain)
             filter (where nth <= 20)
      into groups, blockers
      from (select project_id, domain, count(*) as n,
                   row_number() over (order by project_id, domain) as nth
              from public.tam_companies
             where domain is not null
             group by project_id, domain
            having count(*) > 1) as dupes;
    if groups > 0 then
      raise exception 'tam_companies has % duplicate (project_id, domain) pairs: %', groups, blockers
        using hint = 'Keep one row per (project_id, domain), delete the others, and apply '
                     'again. Nothing of this migration was applied.';
    end if;
  end if;
  if to_regclass('public.tam_contacts_project_linkedin_key') is null then
    select count(*), string_agg(format('project %s linkedin_url %s (%s rows)', project_id,
                                       linkedin_url, n),
                                '; ' order by project_id, linkedin_url)
             filter (where nth <= 20)
      into groups, blockers
      from (select project_id, linkedin_url, count(*) as n,
                   row_number() over (order by project_id, linkedin_url) as nth
              from public.tam_contacts
             where linkedin_url is not null
             group by project_id, linkedin_url
            having count(*) > 1) as dupes;
    if groups > 0 then
      raise exception 'tam_contacts has % duplicate (project_id, linkedin_url) pairs: %',
        groups, blockers
        using hint = 'Keep one row per (project_id, linkedin_url), delete the others, and '
                     'apply again. Nothing of this migration was applied.';
    end if;
  end if;
end $$;

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
-- Row level security on, and nothing for the browser's roles: Supabase grants ALL on new
-- tables to anon and authenticated, and TRUNCATE ignores RLS. What they may do is granted,
-- with the policies that go with it, by 20261202000000_tam_tenancy.sql.
-- ---------------------------------------------------------------------------------------
alter table public.tam_projects enable row level security;
alter table public.tam_companies enable row level security;
alter table public.tam_contacts enable row level security;
alter table public.tam_job_queue enable row level security;

revoke all on table public.tam_projects, public.tam_companies, public.tam_contacts,
  public.tam_job_queue from public, anon, authenticated;
