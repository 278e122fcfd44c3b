-- Tenancy: every tam_* row belongs to one customer, the owner of its project
-- (docs/contracts.md, "Tenancy and security").
--
-- A signed-in user (role authenticated, auth.uid() = the JWT's sub) reads only rows of
-- projects they own, in all four tables; creates projects owned by themselves, renames them,
-- edits their ICP and deletes them; creates pending jobs for their own projects; sets
-- feedback on their own companies. Nothing else: owner, status, auto_refine, verdicts,
-- contacts, job progress and results belong to the service role (BYPASSRLS on Supabase, so
-- no policy is needed for it). anon gets nothing. A project whose user_id is null is nobody's.
--
-- Two layers, because each alone has a gap:
--   * privileges say which commands and columns: Supabase grants ALL on every new table to
--     anon and authenticated, so we revoke everything and grant back exactly the contract
--     (column lists for insert/update). Privileges are checked before any policy, so no
--     policy of the install's can let a user write a column or command we did not grant.
--     TRUNCATE ignores RLS altogether; only the revoke stops it.
--   * policies say which rows. Permissive policies OR together, restrictive ones AND, so:
--       rows allowed = (any permissive policy of the install's OR ours) AND (every restrictive)
--     Ours are one permissive policy per allowed command (so a fresh install works) and one
--     restrictive policy per table and command for authenticated (owner scope, or false where
--     the contract allows nothing). Whatever permissive policy the install already has, for
--     whatever role, the AND with our restrictive one caps authenticated at owner scope; an
--     install whose own policies were owner-scoped (e.g. projects_owner_select using
--     (auth.uid() = user_id)) ends exactly where it was. The restrictive `false` policies
--     also hold if someone later re-runs `grant all on all tables ... to authenticated`.
--
-- Policies are written `(select auth.uid()) = user_id` so Postgres evaluates auth.uid() once
-- per statement (an initPlan) instead of once per row; tam_projects_user_id_idx and the
-- project_id indexes of the other tables (20261122000000_tam_pipeline.sql) are behind them.
--
-- Idempotent (applies twice with the same result). One transaction, as the first file
-- explains (no begin/commit in the file; with psql use -1):
--   psql -v ON_ERROR_STOP=1 -1 -f supabase/migrations/20261202000000_tam_tenancy.sql
-- The only policies dropped are the ones 20261122000000_tam_pipeline.sql used to create and
-- this file's own; the install's policies are left as they are.

-- ---------------------------------------------------------------------------------------
-- The owner.
-- ---------------------------------------------------------------------------------------
do $$
declare
  kind text;
begin
  select data_type into kind from information_schema.columns
   where table_schema = 'public' and table_name = 'tam_projects' and column_name = 'user_id';
  if kind is not null and kind <> 'uuid' then
    raise exception 'tam_projects.user_id exists as %, not uuid; the owner policies compare it '
                    'with auth.uid()', kind
      using hint = 'Convert it (alter table tam_projects alter column user_id type uuid using '
                   'user_id::uuid) and apply again. Nothing of this migration was applied.';
  end if;
end $$;

alter table public.tam_projects add column if not exists user_id uuid;

-- NOTE: an install that already had an owner column keeps its own default.
do $$
begin
  if (select column_default from information_schema.columns
       where table_schema = 'public' and table_name = 'tam_projects'
         and column_name = 'user_id') is null then
    alter table public.tam_projects alter column user_id set default auth.uid();
  end if;
end $$;

create index if not exists tam_projects_user_id_idx on public.tam_projects (user_id);

-- ---------------------------------------------------------------------------------------
-- Policies an earlier version of 20261122000000_tam_pipeline.sql created: the `using (true)`
-- reads let every signed-in user read every customer's rows, and OR-widened an install's own
-- owner policies. These exact names, nothing else.
-- ---------------------------------------------------------------------------------------
drop policy if exists tam_projects_read on public.tam_projects;
drop policy if exists tam_projects_service_write on public.tam_projects;
drop policy if exists tam_companies_read on public.tam_companies;
drop policy if exists tam_companies_service_write on public.tam_companies;
drop policy if exists tam_contacts_read on public.tam_contacts;
drop policy if exists tam_contacts_service_write on public.tam_contacts;
drop policy if exists tam_job_queue_read on public.tam_job_queue;
drop policy if exists tam_job_queue_service_write on public.tam_job_queue;

alter table public.tam_projects enable row level security;
alter table public.tam_companies enable row level security;
alter table public.tam_contacts enable row level security;
alter table public.tam_job_queue enable row level security;

-- ---------------------------------------------------------------------------------------
-- Privileges. REVOKE ALL also removes column privileges, so re-applying starts from zero.
-- ---------------------------------------------------------------------------------------
revoke all on table public.tam_projects, public.tam_companies, public.tam_contacts,
  public.tam_job_queue from public, anon, authenticated;

grant select on table public.tam_projects, public.tam_companies, public.tam_contacts,
  public.tam_job_queue to authenticated;
-- status only so an app that sends the initial 'sourcing' keeps working (the policy checks it).
grant insert (id, name, icp_profile, user_id, status) on table public.tam_projects
  to authenticated;
grant update (name, icp_profile) on table public.tam_projects to authenticated;
grant delete on table public.tam_projects to authenticated;
grant update (feedback) on table public.tam_companies to authenticated;
-- status and progress only so an app that sends 'pending' and 0 keeps working (checked below).
grant insert (id, project_id, job_type, status, progress) on table public.tam_job_queue
  to authenticated;

grant all on table public.tam_projects, public.tam_companies, public.tam_contacts,
  public.tam_job_queue to service_role;

-- ---------------------------------------------------------------------------------------
-- Policies: this file's own names, replaced on every run.
-- ---------------------------------------------------------------------------------------
do $$
declare
  t text;
  p text;
begin
  foreach t in array array['tam_projects', 'tam_companies', 'tam_contacts', 'tam_job_queue'] loop
    foreach p in array array[
      'own_select', 'own_insert', 'own_update', 'own_delete',
      'at_most_own_select', 'at_most_own_insert', 'at_most_own_update', 'at_most_own_delete',
      'no_insert', 'no_update', 'no_delete'
    ] loop
      execute format('drop policy if exists %I on public.%I', t || '_' || p, t);
    end loop;
  end loop;
end $$;

-- tam_projects: read, create (owned by the caller, initial status), rename / edit the ICP
-- (column privileges), delete (cascades to the project's companies, contacts and jobs).
create policy tam_projects_own_select on public.tam_projects
  for select to authenticated
  using ((select auth.uid()) = user_id);
create policy tam_projects_at_most_own_select on public.tam_projects
  as restrictive for select to authenticated
  using ((select auth.uid()) = user_id);

create policy tam_projects_own_insert on public.tam_projects
  for insert to authenticated
  with check ((select auth.uid()) = user_id and status = 'sourcing');
create policy tam_projects_at_most_own_insert on public.tam_projects
  as restrictive for insert to authenticated
  with check ((select auth.uid()) = user_id and status = 'sourcing');

create policy tam_projects_own_update on public.tam_projects
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
create policy tam_projects_at_most_own_update on public.tam_projects
  as restrictive for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);

create policy tam_projects_own_delete on public.tam_projects
  for delete to authenticated
  using ((select auth.uid()) = user_id);
create policy tam_projects_at_most_own_delete on public.tam_projects
  as restrictive for delete to authenticated
  using ((select auth.uid()) = user_id);

-- tam_companies: read; feedback only (column privilege); rows come from the pipeline.
create policy tam_companies_own_select on public.tam_companies
  for select to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_companies.project_id and p.user_id = (select auth.uid())));
create policy tam_companies_at_most_own_select on public.tam_companies
  as restrictive for select to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_companies.project_id and p.user_id = (select auth.uid())));

create policy tam_companies_own_update on public.tam_companies
  for update to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_companies.project_id and p.user_id = (select auth.uid())))
  with check (exists (select 1 from public.tam_projects p
                       where p.id = tam_companies.project_id
                         and p.user_id = (select auth.uid())));
create policy tam_companies_at_most_own_update on public.tam_companies
  as restrictive for update to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_companies.project_id and p.user_id = (select auth.uid())))
  with check (exists (select 1 from public.tam_projects p
                       where p.id = tam_companies.project_id
                         and p.user_id = (select auth.uid())));

create policy tam_companies_no_insert on public.tam_companies
  as restrictive for insert to authenticated with check (false);
create policy tam_companies_no_delete on public.tam_companies
  as restrictive for delete to authenticated using (false);

-- tam_contacts: read only (emails and phones are the pipeline's to write).
create policy tam_contacts_own_select on public.tam_contacts
  for select to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_contacts.project_id and p.user_id = (select auth.uid())));
create policy tam_contacts_at_most_own_select on public.tam_contacts
  as restrictive for select to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_contacts.project_id and p.user_id = (select auth.uid())));

create policy tam_contacts_no_insert on public.tam_contacts
  as restrictive for insert to authenticated with check (false);
create policy tam_contacts_no_update on public.tam_contacts
  as restrictive for update to authenticated using (false) with check (false);
create policy tam_contacts_no_delete on public.tam_contacts
  as restrictive for delete to authenticated using (false);

-- tam_job_queue: read; create a pending job for an own project. Moving a job is the Edge
-- Function's and the pipeline's (service role), never the browser's (docs/contracts.md,
-- "Who moves the job row").
create policy tam_job_queue_own_select on public.tam_job_queue
  for select to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_job_queue.project_id and p.user_id = (select auth.uid())));
create policy tam_job_queue_at_most_own_select on public.tam_job_queue
  as restrictive for select to authenticated
  using (exists (select 1 from public.tam_projects p
                  where p.id = tam_job_queue.project_id and p.user_id = (select auth.uid())));

-- NOTE: the column privilege already keeps the run's fields at their defaults; the check
-- repeats it so a later `grant all` cannot let a browser forge a running or finished job.
create policy tam_job_queue_own_insert on public.tam_job_queue
  for insert to authenticated
  with check (
    status = 'pending' and progress = 0 and result_summary is null and flow_run_id is null
    and started_at is null and heartbeat_at is null and completed_at is null
    and exists (select 1 from public.tam_projects p
                 where p.id = tam_job_queue.project_id and p.user_id = (select auth.uid())));
create policy tam_job_queue_at_most_own_insert on public.tam_job_queue
  as restrictive for insert to authenticated
  with check (
    status = 'pending' and progress = 0 and result_summary is null and flow_run_id is null
    and started_at is null and heartbeat_at is null and completed_at is null
    and exists (select 1 from public.tam_projects p
                 where p.id = tam_job_queue.project_id and p.user_id = (select auth.uid())));

create policy tam_job_queue_no_update on public.tam_job_queue
  as restrictive for update to authenticated using (false) with check (false);
create policy tam_job_queue_no_delete on public.tam_job_queue
  as restrictive for delete to authenticated using (false);
