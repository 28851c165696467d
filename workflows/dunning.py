"""DunningWorkflow: one per dunning episode (id `dunning-<billing account id>-<first overdue invoice id>`).

Started when an invoice is overdue. It owns both the payment retries and the escalation ladder of the
account's dunning policy, walking one timeline (domain.dunning_timeline) so the two cannot drift apart.
At every step it re-reads the balance and evaluates the level's conditions. It ends the moment the
balance is paid (signal `balance_settled` from any payment path, or the balance found paid at a step),
lifts every bar it set through the OSS and records why it ended; or when the last level hands the debt
to collections or writes it off.

A retry's SEPA debit in `processing` is looked up at the gateway once a day for up to 14 days in case its
webhook never comes (patch `dunning-sepa-polling`).

Staff steer it by signals (`pause`, `resume`, `waive_fee`, `retry_payment_now`), each carrying who and
why; the query `dunning_status` says where it stands, what comes next and when."""
from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.dunning import (
        BarringRequest,
        CloseRequest,
        DunningActivities,
        HandOverRequest,
        LateFeeRequest,
        NoticeRequest,
        RecordRequest,
        RetryRequest,
        RetryResult,
        StaffResult,
        TerminationRequest,
        WaiveResult,
    )
    from domain.dunning_policy import DunningLevel, DunningPolicy, NoticeAction
    from domain.dunning_timeline import (
        DUNNING_WORKFLOW,
        QUERY_DUNNING_STATUS,
        SIGNAL_BALANCE_SETTLED,
        SIGNAL_PAUSE,
        SIGNAL_RESUME,
        SIGNAL_RETRY_PAYMENT_NOW,
        SIGNAL_WAIVE_FEE,
        BalanceSettled,
        DunningBalance,
        DunningInput,
        DunningOutcome,
        DunningStatus,
        EpisodeState,
        PauseCommand,
        PendingDebit,
        ResumeCommand,
        RetryPaymentCommand,
        StaffCommand,
        TimelineEntry,
        WaiveFeeCommand,
        announced_barring,
        barring_gate,
        defer,
        dunning_timeline,
        entry_at,
        level_applies,
        lift_for_low_arrears,
        mark_done,
        next_entry,
        pause,
        resume,
        start_state,
        status_view,
        stronger_barring,
    )
    from domain.money import to_minor
    from workflows.messages import (
        SIGNAL_BILL_ON_DEMAND,
        SIGNAL_DUNNING_ENDED,
        SIGNAL_PAYMENT_RECEIVED,
        BillOnDemandRequested,
        DunningEnded,
        PaymentReceived,
        billing_account_workflow_id,
    )
    from workflows.debit_polling import DEBIT_POLL_LIMIT, Poll, activity_cause, look_up_debit, next_look

# Dunning's own SEPA debits in `processing` are polled daily for up to 14 days (histories from before keep waiting for the webhook).
PATCH_SEPA_POLLING = "dunning-sepa-polling"
# A notice that goes out within this time of its step counts from the step (activities take moments).
NOTICE_DELAY_TOLERANCE = timedelta(minutes=5)
DB_CALL = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1))}
# No attempt limit: a barring, and above all the lifting of one, must happen however long the OSS is away.
EXTERNAL_CALL = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=5),
                                non_retryable_error_types=["UnknownBillingAccount", "NotificationRejected", "UnknownDunningSegment"]),
}


@workflow.defn(name=DUNNING_WORKFLOW)
class DunningWorkflow:
    def __init__(self) -> None:
        self.s: EpisodeState | None = None
        self.policy: DunningPolicy | None = None
        self.timeline: list[TimelineEntry] = []
        # Signals are buffered and applied by the main loop, in arrival order, between activities.
        self._commands: list[tuple[str, StaffCommand]] = []
        self._settled: list[BalanceSettled] = []
        self._woken = False
        # When the step being run was planned (moved by pauses): its notices count from then (see _notice).
        self._step_time = None
        self._report_to_account = False

    # --- signals and query ---------------------------------------------------------------------------------

    @workflow.signal(name=SIGNAL_BALANCE_SETTLED)
    def balance_settled(self, hint: BalanceSettled) -> None:
        self._settled.append(hint)
        self._woken = True

    @workflow.signal(name=SIGNAL_PAUSE)
    def pause(self, command: PauseCommand) -> None:
        self._command("pause", command)

    @workflow.signal(name=SIGNAL_RESUME)
    def resume(self, command: ResumeCommand) -> None:
        self._command("resume", command)

    @workflow.signal(name=SIGNAL_WAIVE_FEE)
    def waive_fee(self, command: WaiveFeeCommand) -> None:
        self._command("waive_fee", command)

    @workflow.signal(name=SIGNAL_RETRY_PAYMENT_NOW)
    def retry_payment_now(self, command: RetryPaymentCommand) -> None:
        self._command("retry_payment", command)

    def _command(self, kind: str, command: StaffCommand) -> None:
        self._commands.append((kind, command))
        self._woken = True

    @workflow.query(name=QUERY_DUNNING_STATUS)
    def dunning_status(self) -> DunningStatus | None:
        return None if self.s is None else status_view(self.timeline, self.s)

    # --- the episode ---------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: DunningInput) -> DunningOutcome:
        self.policy = inp.policy or await workflow.execute_activity_method(DunningActivities.load_policy, inp.segment, **DB_CALL)
        self.timeline = dunning_timeline(self.policy, inp.due_at)
        self.s = start_state(inp)
        self._report_to_account = inp.report_to_account
        await workflow.execute_activity_method(DunningActivities.open_episode, inp, **DB_CALL)
        balance = await self._balance()
        if balance.paid:
            await self._end("settled", "nothing was overdue when the episode began")
        while not self.s.ended:
            # Reset first: a signal landing while an activity below runs sets it again, so the wait returns at once.
            self._woken = False
            if self._settled and await self._on_settled_hint():
                break
            if self._commands:
                await self._apply_commands()
                if self.s.ended:
                    break
            now = workflow.now()
            if any(d.next_check <= now for d in self.s.pending_debits):
                await self._check_debits(now)
                continue
            if self.s.pause is not None:
                until = self.s.pause.until
                if until is not None and now >= until:
                    await self._auto_resume()
                    continue
                await self._wait_until(until, now)
                continue
            entry = next_entry(self.timeline, self.s)
            if entry is None:
                await self._wait_until(None, now)  # the ladder is done: only a payment, a debit's poll or staff move it now
                continue
            at = entry_at(entry, self.s)
            if at > now:
                await self._wait_until(at, now)
                continue
            balance = await self._balance()
            if await self._settle_if_paid(balance, "the balance was found paid before " + entry.label):
                break
            self._step_time = at
            await self._run_entry(entry, balance)
        # Requests that came in while the episode was ending are answered (refused), so no audit record stays open.
        while self._commands:
            await self._apply_commands()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return DunningOutcome(episode_id=self.s.episode_id, outcome=self.s.outcome, reason=self.s.end_reason or "", level=self.s.level or "none",
                              ended_at=workflow.now())

    async def _wait_until(self, at, now) -> None:
        """Waits for a signal, `at` (None: no step ahead) or the next look at a debit in flight, whichever comes first."""
        polls = [d.next_check for d in self.s.pending_debits]
        wake = min([t for t in [at, *polls] if t is not None], default=None)
        await self._wait(wake - now if wake is not None else None)

    async def _wait(self, timeout: timedelta | None) -> None:
        try:
            await workflow.wait_condition(lambda: self._woken, timeout=timeout)
        except asyncio.TimeoutError:
            pass

    async def _balance(self) -> DunningBalance:
        return await workflow.execute_activity_method(DunningActivities.read_balance, args=[self.s.billing_account_id, workflow.now()], **DB_CALL)

    async def _on_settled_hint(self) -> bool:
        hints, self._settled = self._settled, []
        sources = ", ".join(sorted({h.source for h in hints}))
        balance = await self._balance()
        return await self._settle_if_paid(balance, f"the balance was paid (reported by {sources})")

    async def _settle_if_paid(self, balance: DunningBalance, reason: str) -> bool:
        """Ends the episode when nothing is overdue any more; lifts the bars when a part payment brought
        the arrears below the barring floor (the episode goes on)."""
        if balance.paid:
            await self._end("settled", reason)
            return True
        if lift_for_low_arrears(self.policy, self.s, balance):
            await self._lift(f"arrears of {balance.overdue} EUR are below the barring floor")
        return False

    async def _end(self, outcome: str, reason: str) -> None:
        lifted = False
        if outcome == "settled":
            lifted = self.s.barred != "none"
            await self._lift(f"dunning ended: {reason}")
        self.s = self.s.model_copy(update={"outcome": outcome, "end_reason": reason})
        state = {"settled": "settled", "collections": "collections", "write_off": "written_off", "written_off": "written_off"}[outcome]
        await workflow.execute_activity_method(DunningActivities.close_episode, CloseRequest(
            episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, state=state, reason=reason, level=self.s.level), **DB_CALL)
        if self._report_to_account:
            # The account starts the next episode from now on and re-applies a spending cap's barring the lifting removed.
            await self._tell_billing_account(SIGNAL_DUNNING_ENDED, DunningEnded(episode_id=self.s.episode_id, outcome=state, lifted=lifted))

    # --- one timeline step ---------------------------------------------------------------------------------

    async def _run_entry(self, entry: TimelineEntry, balance: DunningBalance) -> None:
        if entry.kind == "payment_retry":
            if self.s.hard_declined and self.policy.stop_retries_on_hard_decline:
                await self._record(f"{entry.key}:skipped", "retry_skipped", "dunning.retry_skipped",
                                   f"Scheduled {entry.label} skipped: the payment method was declined for good (hard decline)")
                self.s = mark_done(self.s, entry)
                return
            self.s = mark_done(self.s, entry)
            await self._retry(entry.key)
            return
        level = self.policy.level(entry.level)
        if not level_applies(level, balance):
            conditions = f"at least {level.when.min_overdue} EUR overdue" + (
                f" on {level.when.min_unpaid_invoices} invoices" if level.when.min_unpaid_invoices else "")
            await self._record(f"{entry.key}:skipped", "level_skipped", "dunning.level_skipped",
                               f"Dunning level {level.name} skipped: it needs {conditions}; {balance.overdue} EUR are overdue on "
                               f"{balance.unpaid_invoices} invoice(s)", level=level.name, status="skipped")
            self.s = mark_done(self.s, entry)
            return
        if level.bars is not None and stronger_barring(self.s.barred, level.bars.scope) and not await self._barring_may_go(entry, level, balance):
            return
        for index, action in enumerate(level.actions):
            if self.s.ended:
                return
            await self._act(entry, level, index, action, balance)
        self.s = mark_done(self.s, entry, ran_level=True)
        await self._record(entry.key, "level", "dunning.level", f"Dunning level {level.name} reached ({balance.overdue} EUR overdue)",
                           level=level.name)
        terminal = next((a for a in level.actions if a.type in ("collections", "write_off")), None)
        if terminal is not None:
            await self._end("collections" if terminal.type == "collections" else "written_off",
                            f"level {level.name}: " + (f"handed over to {terminal.agency}" if terminal.type == "collections" else "written off"))

    async def _barring_may_go(self, entry: TimelineEntry, level: DunningLevel, balance: DunningBalance) -> bool:
        """The run-time §61 TKG check: arrears and the written notice actually sent. A barring whose notice
        is missing sends it now and moves (with every later step) to the end of the notice period."""
        gate = barring_gate(self.policy, self.s, balance, workflow.now())
        if gate.verdict == "bar":
            return True
        if gate.verdict == "skip":
            await self._record(f"{entry.key}:skipped", "level_skipped", "dunning.level_skipped", f"Dunning level {level.name} skipped: {gate.reason}",
                               level=level.name, status="skipped")
            self.s = mark_done(self.s, entry)
            return False
        if gate.verdict == "notice_first":
            # The announcing level was passed over (e.g. less was overdue then): catch up on its letter and fee now.
            found = self.policy.barring_notice()
            if found is not None:
                notice_level, _notice = found
                notice_entry = next(e for e in self.timeline if e.level == notice_level.name)
                for index, action in enumerate(notice_level.actions):
                    if action.type in ("notice", "late_fee"):
                        await self._act(notice_entry, notice_level, index, action, balance)
            if self.s.barring_notice_at is None:
                await self._record(f"{entry.key}:skipped", "level_skipped", "dunning.level_skipped",
                                   f"Dunning level {level.name} skipped: no written barring notice could be sent, so no barring",
                                   level=level.name, status="skipped")
                self.s = mark_done(self.s, entry)
                return False
            until = self.s.barring_notice_at + self.policy.barring_protection.notice_period
        else:
            until = gate.until
        self.s = defer(self.s, entry, until)
        await self._record(f"{entry.key}:deferred:{until.isoformat()}", "barring_deferred", "dunning.barring_deferred",
                           f"Dunning level {level.name} moved to {until:%Y-%m-%d %H:%M} UTC: {gate.reason}", level=level.name)
        return False

    async def _act(self, entry: TimelineEntry, level: DunningLevel, index: int, action, balance: DunningBalance) -> None:
        kind = action.type
        if kind == "notice":
            barring = announced_barring(self.policy, self.timeline, self.s, entry, self._step_time) if action.announces_barring else None
            await self._notice(entry, level, action, f"{entry.key}:notice-{index}", barring=barring)
        elif kind == "late_fee":
            key = await workflow.execute_activity_method(DunningActivities.add_late_fee, LateFeeRequest(
                episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, level=level.name, amount=action.amount,
                description=action.description, vat_rate=action.vat_rate, vat_category=action.vat_category), **DB_CALL)
            if key not in self.s.fees:
                self.s = self.s.model_copy(update={"fees": [*self.s.fees, key]})
        elif kind == "retry_payment":
            if self.s.hard_declined and self.policy.stop_retries_on_hard_decline:
                await self._record(f"{entry.key}:retry-skipped", "retry_skipped", "dunning.retry_skipped",
                                   f"Payment retry of level {level.name} skipped: the payment method was declined for good (hard decline)")
            else:
                await self._retry(f"{entry.key}:retry")
        elif kind == "bar":
            if stronger_barring(self.s.barred, action.scope):
                await self._bar(action.scope, entry.key, level.name, f"dunning level {level.name}")
        elif kind == "terminate":
            request_id = await workflow.execute_activity_method(DunningActivities.request_termination, TerminationRequest(
                episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, level=level.name, final_bill=action.final_bill,
                overdue_cents=balance.overdue_cents), **DB_CALL)
            if request_id is not None:
                # The final bill is the billing-account workflow's on-demand bill; it issues the request recorded above.
                await self._tell_billing_account(SIGNAL_BILL_ON_DEMAND, BillOnDemandRequested(request_id=request_id))
        elif kind in ("collections", "write_off"):
            await workflow.execute_activity_method(DunningActivities.hand_over, HandOverRequest(
                episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, level=level.name, kind=kind,
                agency=getattr(action, "agency", None), overdue_cents=balance.overdue_cents, invoice_ids=balance.overdue_invoice_ids), **DB_CALL)

    async def _notice(self, entry: TimelineEntry, level: DunningLevel, action: NoticeAction, key_suffix: str,
                      barring: tuple | None = None) -> bool:
        fee = next((a.amount for a in level.actions if a.type == "late_fee"), None)
        request = NoticeRequest(
            episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, key=f"dunning:{self.s.episode_id}:{key_suffix}",
            level=level.name, template=action.template, channel=action.channel, announces_barring=action.announces_barring,
            barring_at=barring[0] if barring else None, barring_scope=barring[1] if barring else None,
            late_fee_cents=to_minor(fee) if fee is not None else 0, as_of=self._step_time)
        try:
            result = await workflow.execute_activity_method(DunningActivities.send_notice, request, **EXTERNAL_CALL)
        except ActivityError as error:
            await self._record(f"{key_suffix}:failed", "notice_failed", "dunning.notice_failed",
                               f"Dunning level {level.name}: notice {action.template} could not be sent: {activity_cause(error)}",
                               level=level.name, status="failed")
            return False
        if result.sent and action.announces_barring and self.s.barring_notice_at is None:
            # The notice period runs from when the notice went out: its step, or, if sending took longer than a
            # few minutes (mail server down, retries), the moment it finally went out.
            sent_at = result.sent_at or workflow.now()
            counted_from = self._step_time if sent_at - self._step_time <= NOTICE_DELAY_TOLERANCE else sent_at
            self.s = self.s.model_copy(update={"barring_notice_at": counted_from})
        return result.sent

    # --- payments, barring ---------------------------------------------------------------------------------

    async def _retry(self, trigger: str) -> list[RetryResult]:
        """Charges every overdue invoice again (a new attempt each), then ends the episode if that paid it."""
        plan = await workflow.execute_activity_method(DunningActivities.retry_plan, args=[self.s.billing_account_id, workflow.now()], **DB_CALL)
        results: list[RetryResult] = []
        for item in plan:
            try:
                result = await workflow.execute_activity_method(DunningActivities.retry_payment, RetryRequest(
                    episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, invoice_id=item.invoice_id, attempt=item.attempt,
                    trigger=trigger), **EXTERNAL_CALL)
            except ActivityError as error:
                await self._record(f"{trigger}:{item.invoice_id}:{item.attempt}:failed", "payment_retry", "dunning.payment_retry_failed",
                                   f"Payment retry ({trigger}) for invoice {item.invoice_id} failed: {activity_cause(error)}", status="failed")
                continue
            results.append(result)
            update = {"retries_made": self.s.retries_made + 1}
            if result.status == "processing" and result.payment_id and workflow.patched(PATCH_SEPA_POLLING):
                now = workflow.now()
                update["pending_debits"] = [*self.s.pending_debits, PendingDebit(payment_id=result.payment_id, invoice_id=item.invoice_id,
                                                                                  amount_cents=result.amount_cents, since=now,
                                                                                  next_check=next_look(now))]
            if result.decline_class == "hard":
                update["hard_declined"] = True
            elif result.status == "succeeded":
                update["hard_declined"] = False
            self.s = self.s.model_copy(update=update)
            if result.status == "succeeded" and result.payment_id:
                # The billing-account workflow allocates received money; tell it as any payment path does.
                await self._tell_billing_account(SIGNAL_PAYMENT_RECEIVED, PaymentReceived(payment_id=result.payment_id, amount_cents=result.amount_cents,
                                                                                          source="card"))
        if any(r.status == "succeeded" for r in results):
            await self._settle_if_paid(await self._balance(), f"the payment retry ({trigger}) succeeded")
        return results

    async def _check_debits(self, now) -> None:
        """The polling fallback for this episode's debits in flight: looks each due one up at the gateway. A debit
        that succeeded is told to the billing-account workflow (which allocates it) and may end the episode; one
        that failed is dropped (the next retry charges again); one still in flight after DEBIT_POLL_LIMIT is dropped
        and recorded, and its invoice is dunned like any other."""
        kept, succeeded = [], []
        for debit in self.s.pending_debits:
            if debit.next_check > now:
                kept.append(debit)
                continue

            async def look_failed(cause: str, debit=debit) -> None:
                await self._record(f"debit:{debit.payment_id}:check-failed:{now.isoformat()}", "payment_check", "dunning.payment_check_failed",
                                   f"Looking up debit {debit.payment_id} failed: {cause}", status="failed")

            status, poll = await look_up_debit(DunningActivities.check_payment, debit.payment_id, debit.since, now, call=EXTERNAL_CALL,
                                               on_failure=look_failed)
            if poll is Poll.GIVEN_UP:
                await self._record(f"debit:{debit.payment_id}:overdue", "payment_check", "dunning.payment_processing_overdue",
                                   f"Debit {debit.payment_id} for invoice {debit.invoice_id} is still {status} after {DEBIT_POLL_LIMIT.days} days; "
                                   "no longer polled", status="failed")
            elif poll is Poll.WAIT:
                kept.append(debit.model_copy(update={"next_check": next_look(now)}))
            elif status == "succeeded":
                succeeded.append(debit)
        self.s = self.s.model_copy(update={"pending_debits": kept})
        for debit in succeeded:
            await self._tell_billing_account(SIGNAL_PAYMENT_RECEIVED, PaymentReceived(payment_id=debit.payment_id, amount_cents=debit.amount_cents,
                                                                                      source="sepa_debit"))
        if succeeded:
            await self._settle_if_paid(await self._balance(), f"the debit {', '.join(d.payment_id for d in succeeded)} was found settled")

    async def _bar(self, scope: str, step_key: str, level: str | None, reason: str) -> None:
        try:
            await workflow.execute_activity_method(DunningActivities.set_barring, BarringRequest(
                episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, barring=scope, key=f"{self.s.episode_id}:{step_key}",
                level=level, reason=reason), **EXTERNAL_CALL)
        except ActivityError as error:
            await self._record(f"{step_key}:bar-failed", "bar", "dunning.barring_failed", f"Barring ({scope}) failed: {activity_cause(error)}",
                               level=level, status="failed")
            return
        self.s = self.s.model_copy(update={"barred": scope})

    async def _lift(self, reason: str) -> None:
        """Lifts every bar this episode set. Retried until the OSS confirms: a paid customer must not stay barred."""
        if self.s.barred == "none":
            return
        lifts = self.s.lifts + 1
        self.s = self.s.model_copy(update={"lifts": lifts})
        await workflow.execute_activity_method(DunningActivities.set_barring, BarringRequest(
            episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, barring="none", key=f"{self.s.episode_id}:lift-{lifts}",
            level=self.s.level, reason=reason), **EXTERNAL_CALL)
        self.s = self.s.model_copy(update={"barred": "none"})

    async def _tell_billing_account(self, signal: str, payload) -> None:
        try:
            await workflow.get_external_workflow_handle(billing_account_workflow_id(self.s.billing_account_id)).signal(signal, payload)
        except FailureError as error:
            await self._record(f"signal:{signal}:{workflow.now().isoformat()}", "signal_failed", "dunning.signal_failed",
                               f"The billing-account workflow could not be told ({signal}): {error.message}; it finds the change when it next "
                               "looks at the account", status="failed")

    # --- staff commands ------------------------------------------------------------------------------------

    async def _apply_commands(self) -> None:
        commands, self._commands = self._commands, []
        for kind, command in commands:
            if command.command_id in self.s.applied_commands:
                continue
            self.s = self.s.model_copy(update={"applied_commands": [*self.s.applied_commands, command.command_id]})
            if self.s.ended:
                await self._staff(kind, command, "rejected", f"Staff request {kind} refused: the episode has ended")
                continue
            now = workflow.now()
            if kind == "pause":
                if command.until is not None and command.until <= now:
                    await self._staff(kind, command, "rejected", f"Pause refused: {command.until:%Y-%m-%d %H:%M} UTC is not in the future")
                    continue
                self.s = pause(self.s, command, now)
                until = f" until {command.until:%Y-%m-%d %H:%M} UTC" if command.until else " until staff resume it"
                await self._staff(kind, command, "applied", f"Dunning paused ({command.kind}){until}",
                                  {"until": command.until.isoformat() if command.until else None, "pauseKind": command.kind})
            elif kind == "resume":
                if self.s.pause is None:
                    await self._staff(kind, command, "rejected", "Resume refused: dunning is not paused")
                    continue
                self.s = resume(self.s, now)
                await self._staff(kind, command, "applied", "Dunning resumed; the remaining steps move by the time spent paused",
                                  {"shiftSeconds": self.s.shift.total_seconds()})
            elif kind == "waive_fee":
                await self._waive(command)
            elif kind == "retry_payment":
                # Money may have come in unannounced: never charge a card for a balance already paid.
                if await self._settle_if_paid(await self._balance(), "the balance was found paid before a staff payment retry"):
                    await self._staff(kind, command, "rejected", "Payment retry refused: the balance is already paid")
                    continue
                results = await self._retry(f"staff:{command.command_id}")
                statuses = [r.status for r in results]
                await self._staff(kind, command, "applied", f"Payment retried now: {', '.join(statuses) or 'nothing was due'}", {"statuses": statuses})

    async def _waive(self, command: WaiveFeeCommand) -> None:
        keys = list(self.s.fees)
        if command.level is not None:
            keys = [k for k in keys if k == f"dunning-fee:{self.s.episode_id}:{command.level}"]
        if not keys:
            which = f"at level {command.level}" if command.level else "in this episode"
            await self._staff("waive_fee", command, "rejected", f"Waiver refused: no late fee was charged {which}")
            return
        result: WaiveResult = await workflow.execute_activity_method(
            DunningActivities.waive_fees, args=[self.s.episode_id, self.s.billing_account_id, keys, command.actor, command.reason], **DB_CALL)
        credited = f"; credited on their fee invoice by {', '.join(result.credit_notes)}: {', '.join(result.credited)}" if result.credited else ""
        billed = f"; already on an invoice (needs a credit note): {', '.join(result.already_billed)}" if result.already_billed else ""
        await self._staff("waive_fee", command, "applied" if result.waived or result.credited or result.already_waived else "rejected",
                          f"Late fees waived: {', '.join(result.waived) or 'none'}{credited}{billed}", result.model_dump())

    async def _auto_resume(self) -> None:
        held = self.s.pause
        self.s = resume(self.s, workflow.now())
        await self._record(f"auto-resume:{held.command_id}", "resume", "dunning.resumed",
                           f"Dunning resumed automatically: the {held.kind.replace('_', ' ')} pause ran until {held.until:%Y-%m-%d %H:%M} UTC")

    async def _staff(self, kind: str, command: StaffCommand, status: str, message: str, result: dict | None = None) -> None:
        await workflow.execute_activity_method(DunningActivities.staff_result, StaffResult(
            episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, command=command, kind=kind, status=status, message=message,
            result=result or {}), **DB_CALL)

    async def _record(self, key_suffix: str, kind: str, event_kind: str, message: str, *, level: str | None = None, status: str = "done") -> None:
        await workflow.execute_activity_method(DunningActivities.record, RecordRequest(
            episode_id=self.s.episode_id, billing_account_id=self.s.billing_account_id, key=f"{self.s.episode_id}:{key_suffix}", kind=kind,
            event_kind=event_kind, message=message, level=level, status=status), **DB_CALL)
