"""BillingAccountWorkflow: one per billing account, for the account's whole life.

It owns the bill cycle (anchored on the bill-cycle day, computed in the account's time zone) and,
per closed period: invoice, send, collect. When the oldest open invoice is past due it starts a
DunningWorkflow episode as a child (workflows/dunning.py; abandoned on close, so it outlives every
continue-as-new) that owns payment retries and the escalation ladder of the account's dunning segment;
each payment applied here is told to the episode (`balance_settled`), which ends and lifts its bars
once nothing is overdue, and tells this workflow (`dunning_ended`). Histories begun before that
hand-over (no `dunning-workflow-handover` patch marker) keep running the profile's own dunning steps.

Collection outcomes: `processing` (SEPA) keeps the invoice's pending debit, waited for by the
`payment_received` signal and polled daily (`check_payment`) for up to 14 days; `requires_action`
(3-D Secure) asks the customer once by e-mail; an `unknown` outcome is reconciled inside
`charge_invoice` with the same idempotency key. It continues-as-new after every closed cycle, carrying its state."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, FailureError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.billing import BillingActivities
    from domain.billing_cycle import next_period, period_containing
    from domain.dunning import DunningStep, dunning_level, mark_step_done, next_due_step, settle, start_episode, update_overdue
    from domain.dunning_timeline import SIGNAL_BALANCE_SETTLED, BalanceSettled, DunningInput, dunning_workflow_id
    from domain.money import from_minor
    from workflows.billing_state import AccountState
    from workflows.debit_polling import DEBIT_POLL_LIMIT, Poll, activity_cause, look_up_debit, next_look
    from workflows.dunning import DunningWorkflow
    from workflows.messages import (
        BILLING_ACCOUNT_WORKFLOW,
        QUERY_ACCOUNT_SUMMARY,
        QUERY_BALANCE,
        QUERY_CURRENT_CYCLE,
        QUERY_DUNNING_STATE,
        SIGNAL_BILL_ON_DEMAND,
        SIGNAL_CREDIT_NOTE_ISSUED,
        SIGNAL_DUNNING_ENDED,
        SIGNAL_INVOICE_APPROVED,
        SIGNAL_PAYMENT_RECEIVED,
        SIGNAL_PRODUCT_ACTIVATED,
        SIGNAL_ROAMING_DATA_CONTINUE,
        SIGNAL_SPENDING_THRESHOLD,
        AccountSummary,
        BalanceView,
        BillingAccountInput,
        BillOnDemandRequested,
        ChargeOutcome,
        CreditNoteIssued,
        CycleView,
        DunningEnded,
        DunningView,
        InvoiceApproved,
        IssuedInvoice,
        PaymentReceived,
        PendingDebit,
        ProductActivated,
        RoamingDataContinue,
        SpendingThresholdCrossed,
    )

DB_CALL = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1))}
EXTERNAL_CALL = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=5), non_retryable_error_types=["OssRejected", "UnknownBillingAccount"]),
}
# On-demand requests remembered per account (to ignore a repeated signal); older ones are dropped.
ON_DEMAND_MEMORY = 50
# Dunning runs in DunningWorkflow episodes (children) instead of the profile's steps in this workflow.
PATCH_DUNNING_HANDOVER = "dunning-workflow-handover"
# The EU roaming data cap's 100 % crossing bars roaming data through the OSS (before: a notice only).
PATCH_ROAMING_DATA_BAR = "roaming-data-cap-bar"


@workflow.defn(name=BILLING_ACCOUNT_WORKFLOW)
class BillingAccountWorkflow:
    def __init__(self) -> None:
        self.s: AccountState | None = None
        # Signals can arrive before run() has loaded the account; they wait here.
        self._new_products: list[ProductActivated] = []
        self._payments: list[PaymentReceived] = []
        self._spending: list[SpendingThresholdCrossed] = []
        self._roaming_continue: list[RoamingDataContinue] = []
        self._approvals: list[InvoiceApproved] = []
        self._on_demand: list[BillOnDemandRequested] = []
        self._credit_notes: list[CreditNoteIssued] = []
        self._dunning_ended: list[DunningEnded] = []
        self._woken = False
        # Set once at the start of run(): True for histories that hand dunning to DunningWorkflow episodes.
        self._episodes = False

    @workflow.signal(name=SIGNAL_PRODUCT_ACTIVATED)
    def product_activated(self, event: ProductActivated) -> None:
        self._new_products.append(event)
        self._woken = True

    @workflow.signal(name=SIGNAL_PAYMENT_RECEIVED)
    def payment_received(self, payment: PaymentReceived) -> None:
        self._payments.append(payment)
        self._woken = True

    @workflow.signal(name=SIGNAL_SPENDING_THRESHOLD)
    def spending_threshold_crossed(self, event: SpendingThresholdCrossed) -> None:
        self._spending.append(event)
        self._woken = True

    @workflow.signal(name=SIGNAL_ROAMING_DATA_CONTINUE)
    def roaming_data_continue(self, event: RoamingDataContinue) -> None:
        self._roaming_continue.append(event)
        self._woken = True

    @workflow.signal(name=SIGNAL_INVOICE_APPROVED)
    def invoice_approved(self, event: InvoiceApproved) -> None:
        self._approvals.append(event)
        self._woken = True

    @workflow.signal(name=SIGNAL_BILL_ON_DEMAND)
    def bill_on_demand(self, event: BillOnDemandRequested) -> None:
        self._on_demand.append(event)
        self._woken = True

    @workflow.signal(name=SIGNAL_CREDIT_NOTE_ISSUED)
    def credit_note_issued(self, event: CreditNoteIssued) -> None:
        self._credit_notes.append(event)
        self._woken = True

    @workflow.signal(name=SIGNAL_DUNNING_ENDED)
    def dunning_ended(self, event: DunningEnded) -> None:
        self._dunning_ended.append(event)
        self._woken = True

    @workflow.query(name=QUERY_ACCOUNT_SUMMARY)
    def account_summary(self) -> AccountSummary | None:
        if self.s is None:
            return None
        return AccountSummary(
            billing_account_id=self.s.billing_account_id, cycle=self.current_cycle(), balance=from_minor(self.s.open_cents),
            dunning=self.dunning_state(), products=[p.product_id for p in self.s.products], invoices_issued=self.s.invoices_issued,
        )

    @workflow.query(name=QUERY_CURRENT_CYCLE)
    def current_cycle(self) -> CycleView | None:
        if self.s is None:
            return None
        p = self.s.period
        return CycleView(start=p.start, end=p.end, local_start=p.local_start.isoformat(), local_end=p.local_end.isoformat())

    @workflow.query(name=QUERY_BALANCE)
    def balance(self) -> BalanceView:
        if self.s is None:
            return BalanceView(open_cents=0, open_invoices=[])
        return BalanceView(open_cents=self.s.open_cents, open_invoices=self.s.open_invoices)

    @workflow.query(name=QUERY_DUNNING_STATE)
    def dunning_state(self) -> DunningView:
        if self.s is None:
            return DunningView(level="none", suspended=False, paused=False, invoice_id=None, next_step=None, next_step_at=None)
        if self._episodes and not self.s.dunning.in_episode:
            episode = self.s.dunning_episode_id
            prefix = f"dunning-{self.s.billing_account_id}-"
            if episode:
                invoice_id = episode[len(prefix):] if episode.startswith(prefix) else None
            else:
                # As before the hand-over: the invoice dunning would start from (the oldest open one), even before it is due.
                invoice_id = self.s.open_invoices[0].invoice_id if self.s.open_invoices else None
            return DunningView(level="episode" if episode else "none", suspended=False, paused=False, invoice_id=invoice_id, next_step=None,
                               next_step_at=None, episode_id=episode)
        upcoming = self._next_step(self._projected_dunning())
        d = self.s.dunning
        return DunningView(level=dunning_level(d), suspended=d.suspended, paused=d.paused, invoice_id=d.invoice_id,
                           next_step=upcoming[0].name if upcoming else None, next_step_at=upcoming[1] if upcoming else None)

    @workflow.run
    async def run(self, inp: BillingAccountInput) -> None:
        # Before any command: a history begun before the hand-over replays without the marker and keeps the old steps.
        self._episodes = workflow.patched(PATCH_DUNNING_HANDOVER)
        if inp.carried_state is not None:
            self.s = AccountState.model_validate(inp.carried_state)
        else:
            setup = await workflow.execute_activity_method(BillingActivities.load_account_setup, inp.billing_account_id, **DB_CALL)
            self.s = AccountState(
                billing_account_id=inp.billing_account_id, customer_id=inp.customer_id, profile=setup.profile, cycle=setup.cycle,
                period=period_containing(setup.cycle, workflow.now()), started_at=workflow.now(),
            )
        s = self.s
        self._payments = s.pending_payments + self._payments
        self._spending = s.pending_spending + self._spending
        self._roaming_continue, s.pending_roaming_continue = s.pending_roaming_continue + self._roaming_continue, []
        self._approvals = s.pending_approvals + self._approvals
        self._on_demand = s.pending_on_demand + self._on_demand
        self._credit_notes = s.pending_credit_notes + self._credit_notes
        self._dunning_ended = s.pending_dunning_ended + self._dunning_ended
        s.pending_dunning_ended = []
        s.pending_payments, s.pending_spending = [], []
        s.pending_approvals, s.pending_on_demand, s.pending_credit_notes = [], [], []
        while True:
            # Reset before looking at the buffers: a signal that lands while an activity below runs sets it
            # again, so the wait at the end of this pass returns at once instead of sleeping past it.
            self._woken = False
            self._take_products()
            if self._payments:
                await self._apply_payments()
            if self._dunning_ended:
                await self._on_dunning_ended()
            if self._spending:
                await self._handle_spending()
            if self._roaming_continue:
                await self._continue_roaming_data()
            if self._credit_notes:
                await self._deliver_credit_notes()
            if self._approvals:
                await self._release_approved()
            if self._on_demand:
                await self._bill_on_demand()
            now = workflow.now()
            if now >= s.period.end:
                await self._close_cycle()
                s.period = next_period(s.cycle, s.period)
                s.cycles_closed += 1
                await self._lift_spending_cap()
                break
            # An episode of the old in-workflow ladder carried over from before the hand-over runs on to its end; the
            # next one is a DunningWorkflow (starting it now would replay every step since the due date at once).
            if self._episodes and not s.dunning.in_episode:
                due = None
                if await self._check_pending_debits(now):
                    continue
                if await self._ensure_episode(now):
                    continue
            else:
                self._sync_overdue(now)
                due = self._next_step()
                if due is not None and due[1] <= now:
                    await self._run_step(due[0])
                    continue
            next_check = min((d.next_check for d in s.pending_debits.values()), default=None)
            wake_at = min(t for t in (s.period.end, due[1] if due else None, self._next_due_date(now), next_check) if t is not None)
            try:
                await workflow.wait_condition(lambda: self._woken, timeout=wake_at - now)
            except asyncio.TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._take_products()
        s.pending_payments, s.pending_spending = list(self._payments), list(self._spending)
        s.pending_approvals, s.pending_on_demand, s.pending_credit_notes = list(self._approvals), list(self._on_demand), list(self._credit_notes)
        s.pending_dunning_ended = list(self._dunning_ended)
        s.pending_roaming_continue = list(self._roaming_continue)
        workflow.continue_as_new(BillingAccountInput(billing_account_id=s.billing_account_id, customer_id=s.customer_id, carried_state=s.model_dump(mode="json")))

    def _take_products(self) -> None:
        known = {p.product_id for p in self.s.products}
        for event in self._new_products:
            if event.product_id not in known:
                self.s.products.append(event)
                known.add(event.product_id)
        self._new_products = []

    async def _close_cycle(self) -> None:
        s = self.s
        if s.held_invoices:
            # An approval whose signal never arrived is found here, once a cycle.
            approved = await workflow.execute_activity_method(BillingActivities.approved_invoices, list(s.held_invoices), **DB_CALL)
            for invoice in approved:
                await self._deliver_approved(invoice.invoice_id)
        issued = await workflow.execute_activity_method(
            BillingActivities.issue_cycle_invoice, args=[s.billing_account_id, s.cycle, s.period, s.profile.payment_terms.total_seconds()], **DB_CALL
        )
        await self._issued(issued)

    async def _issued(self, issued: IssuedInvoice | None) -> None:
        """A new invoice: an onHold draft waits for approval; any other is sent and collected."""
        s = self.s
        if issued is None:
            return
        if issued.state == "onHold":
            if issued.invoice_id not in s.held_invoices:
                s.held_invoices.append(issued.invoice_id)
            return
        s.invoices_issued += 1
        await self._deliver(issued.invoice_id)

    async def _deliver(self, invoice_id: str) -> None:
        s = self.s
        # A mail server that refuses the message for good must not stop collection: it is recorded for staff.
        await self._safely(BillingActivities.send_invoice, [invoice_id], "invoice.delivery_failed")
        # Credit on the account pays first, so the card is charged only for what is still open.
        await self._apply_payments()
        if any(i.invoice_id == invoice_id for i in s.open_invoices):
            await self._charge(invoice_id)
            await self._apply_payments()

    async def _deliver_approved(self, invoice_id: str) -> None:
        s = self.s
        if invoice_id not in s.held_invoices:
            return  # delivered already, or not one of this account's drafts
        s.held_invoices.remove(invoice_id)
        s.invoices_issued += 1
        await self._deliver(invoice_id)

    async def _release_approved(self) -> None:
        """Staff approved onHold drafts: each now has its number; send and collect it like any invoice."""
        events, self._approvals = self._approvals, []
        for event in events:
            await self._deliver_approved(event.invoice_id)

    async def _bill_on_demand(self) -> None:
        s = self.s
        requests, self._on_demand = self._on_demand, []
        for request in requests:
            if request.request_id in s.on_demand_done:
                continue
            issued = await workflow.execute_activity_method(
                BillingActivities.issue_on_demand_invoice, args=[s.billing_account_id, s.cycle, request.request_id, s.profile.payment_terms.total_seconds()],
                **DB_CALL,
            )
            s.on_demand_done = (s.on_demand_done + [request.request_id])[-ON_DEMAND_MEMORY:]
            await self._issued(issued)

    async def _deliver_credit_notes(self) -> None:
        """A credit note issued through the API: its credit is applied (the open balance and dunning follow)
        and it is e-mailed like an invoice, never charged."""
        events, self._credit_notes = self._credit_notes, []
        await self._apply_payments()
        for event in events:
            await self._safely(BillingActivities.send_invoice, [event.credit_note_id], "invoice.delivery_failed")

    async def _charge(self, invoice_id: str) -> ChargeOutcome:
        s = self.s
        attempt = s.charge_attempts.get(invoice_id, 0) + 1
        s.charge_attempts[invoice_id] = attempt
        outcome = await workflow.execute_activity_method(BillingActivities.charge_invoice, args=[invoice_id, attempt], **EXTERNAL_CALL)
        if outcome.status == "declined" and outcome.decline_class == "hard":
            s.hard_declined = True
        elif outcome.status == "succeeded":
            s.hard_declined = False
        if self._episodes and outcome.payment_id:
            now = workflow.now()
            if outcome.status == "processing":
                # SEPA: the money is on its way for days. Keep the debit, never charge the invoice again meanwhile;
                # the webhook's payment_received signal settles it, a daily look at the gateway is the fallback.
                s.pending_debits[invoice_id] = PendingDebit(payment_id=outcome.payment_id, since=now, next_check=next_look(now))
            elif outcome.status == "requires_action" and invoice_id not in s.action_notified:
                # 3-D Secure: an off-session retry cannot succeed (the episode's retry plan skips this invoice); ask the customer once.
                s.action_notified.append(invoice_id)
                await self._safely(BillingActivities.send_payment_action_notice, [invoice_id, outcome.payment_id], "payment.action_notice_failed")
        return outcome

    async def _apply_payments(self) -> None:
        s = self.s
        received, self._payments = self._payments, []
        before = s.open_cents
        await self._refresh_balance(await workflow.execute_activity_method(BillingActivities.apply_payments, s.billing_account_id, **DB_CALL))
        if not self._episodes:
            return
        open_ids = {i.invoice_id for i in s.open_invoices}
        for invoice_id in [i for i in s.pending_debits if i not in open_ids]:
            del s.pending_debits[invoice_id]  # paid (the debit, or any other way)
        announced = {p.payment_id for p in received}
        if any(d.payment_id in announced for d in s.pending_debits.values()):
            # A signal about a debit still open here (e.g. a bounce): look at the gateway now rather than tomorrow.
            for debit in s.pending_debits.values():
                if debit.payment_id in announced:
                    debit.next_check = workflow.now()
        if s.dunning_episode_id is not None and (received or s.open_cents < before):
            source = received[0].source if received else "billing_account"
            await self._tell_episode(BalanceSettled(source=source, payment_id=received[0].payment_id if received else None))

    async def _tell_episode(self, hint: BalanceSettled) -> None:
        """Tells the running episode that the balance may be paid; it re-reads the balance itself. An episode that no
        longer runs (it ended and its `dunning_ended` is on the way) is not an error."""
        try:
            await workflow.get_external_workflow_handle(self.s.dunning_episode_id).signal(SIGNAL_BALANCE_SETTLED, hint)
        except FailureError:
            pass

    async def _ensure_episode(self, now) -> bool:
        """Starts a DunningWorkflow episode once the oldest open invoice is past due and none is running. The id names
        the account and that invoice, and is never reused: starting it again (a retry, a replay) is a no-op."""
        s = self.s
        if s.dunning_episode_id is not None:
            return False
        overdue = [i for i in s.open_invoices if i.due_at <= now and i.invoice_id not in s.pending_debits]
        if not overdue:
            return False
        # A payment may have been booked without reaching us (the API could not signal): look before dunning.
        await self._apply_payments()
        overdue = [i for i in s.open_invoices if i.due_at <= workflow.now() and i.invoice_id not in s.pending_debits]
        if not overdue or s.dunning_episode_id is not None:
            return True
        oldest = min(overdue, key=lambda i: (i.due_at, i.invoice_id))
        episode_id = dunning_workflow_id(s.billing_account_id, oldest.invoice_id)
        inp = DunningInput(billing_account_id=s.billing_account_id, customer_id=s.customer_id, invoice_id=oldest.invoice_id, due_at=oldest.due_at,
                           segment=s.profile.dunning_segment, report_to_account=True)
        try:
            await workflow.start_child_workflow(DunningWorkflow.run, inp, id=episode_id, parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                                                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            pass  # started before (this episode runs, or ran for this invoice already)
        s.dunning_episode_id = episode_id
        return True

    async def _on_dunning_ended(self) -> None:
        """An episode ended. Lifting its bars lifted every bar: a hard spending cap still in force bars outgoing use again."""
        s = self.s
        events, self._dunning_ended = self._dunning_ended, []
        for event in events:
            if event.episode_id == s.dunning_episode_id:
                s.dunning_episode_id = None
            if event.lifted and s.spending_barred_period is not None:
                await self._safely(BillingActivities.set_service_barring,
                                   [s.billing_account_id, "outgoing", f"spending:{s.spending_barred_period.isoformat()}:after:{event.episode_id}", "spending"],
                                   "service.suspend_failed")

    async def _check_pending_debits(self, now) -> bool:
        """The polling fallback for SEPA debits in `processing`: once a day, for up to 14 days. True when one moved."""
        s = self.s
        moved = False
        for invoice_id, debit in sorted(s.pending_debits.items()):
            if debit.next_check > now:
                continue

            async def look_failed(cause: str, debit=debit) -> None:
                await self._event("payment.check_failed", f"check_payment {debit.payment_id} failed: {cause}")

            status, poll = await look_up_debit(BillingActivities.check_payment, debit.payment_id, debit.since, now, call=EXTERNAL_CALL,
                                               on_failure=look_failed)
            if poll is Poll.WAIT:
                debit.next_check = next_look(now)
                continue
            del s.pending_debits[invoice_id]  # settled or bounced (the balance shows which), or given up
            moved = True
            if poll is Poll.GIVEN_UP:
                await self._event("payment.processing_overdue",
                                  f"Payment {debit.payment_id} for invoice {invoice_id} is still {status} after {DEBIT_POLL_LIMIT.days} days; "
                                  "the invoice is dunned like any overdue invoice")
        if moved:
            await self._apply_payments()
        return moved

    async def _refresh_balance(self, view: BalanceView) -> None:
        """Keeps the dunning episode in line with what is actually open; settles it when its invoice is paid."""
        s = self.s
        now = workflow.now()
        s.open_cents, s.open_invoices = view.open_cents, view.open_invoices
        open_ids = {i.invoice_id for i in view.open_invoices}
        if s.dunning.in_episode and s.dunning.invoice_id not in open_ids:
            s.dunning, restore = settle(s.dunning)
            s.step_times = {}
            # A hard spending cap still in force keeps the lines barred until its cycle ends.
            if restore and s.spending_barred_period is None:
                await self._safely(BillingActivities.set_service_barring, [s.billing_account_id, "none", f"restore:{now.isoformat()}"], "service.restore_failed")
        if not self._episodes and not s.dunning.in_episode and view.open_invoices:
            oldest = view.open_invoices[0]
            s.dunning = start_episode(s.dunning, oldest.invoice_id, oldest.due_at, Decimal(0))
            s.step_times = {}
        self._sync_overdue(now)

    def _overdue_cents(self, now) -> int:
        # Only what is past its due date counts towards dunning thresholds (§61 TKG: arrears, not open items).
        return sum(i.open_cents for i in self.s.open_invoices if i.due_at <= now)

    def _sync_overdue(self, now) -> None:
        if self.s.dunning.in_episode:
            self.s.dunning = update_overdue(self.s.dunning, from_minor(self._overdue_cents(now)))

    def _next_due_date(self, now):
        upcoming = [i.due_at for i in self.s.open_invoices if i.due_at > now]
        return min(upcoming) if upcoming else None

    def _projected_dunning(self):
        """The episode as it will stand once its invoice is due: what staff see as the next step before the due date."""
        s = self.s
        if not s.dunning.in_episode:
            return s.dunning
        due_by_then = sum(i.open_cents for i in s.open_invoices if i.due_at <= s.dunning.due_at)
        return update_overdue(s.dunning, max(s.dunning.overdue_amount, from_minor(due_by_then)))

    def _next_step(self, dunning=None):
        """The next dunning step and when it may run. A suspension never comes sooner after the last written
        notice actually sent than the policy plans between the two, however late the notice went out."""
        s = self.s
        due = next_due_step(s.profile.dunning, dunning or s.dunning)
        if due is None or due[0].action != "suspend":
            return due
        step, at = due
        notices = [n for n in s.profile.dunning.steps if n.action == "reminder" and n.after <= step.after and n.name in s.step_times]
        if notices:
            last = max(notices, key=lambda n: n.after)
            at = max(at, s.step_times[last.name] + (step.after - last.after))
        return step, at

    def _suspension_announced_by(self, step: DunningStep):
        """When a reminder is the last notice before a suspension that applies to this debt, the date it announces."""
        later = [n for n in self.s.profile.dunning.steps if n.after > step.after or (n.after == step.after and n.name != step.name)]
        suspend = next((n for n in later if n.action == "suspend"), None)
        if suspend is None or self.s.dunning.overdue_amount < suspend.min_overdue:
            return None
        if any(n.action == "reminder" and n.after < suspend.after and n.after > step.after for n in later):
            return None
        return workflow.now() + (suspend.after - step.after)

    async def _run_step(self, step: DunningStep) -> None:
        s = self.s
        # A payment may have been booked without reaching us (the API could not signal): look before acting.
        await self._apply_payments()
        self._sync_overdue(workflow.now())
        due = self._next_step()
        if due is None or due[0].name != step.name or due[1] > workflow.now():
            return
        invoice_id = s.dunning.invoice_id
        if step.action == "reminder":
            await self._safely(BillingActivities.send_dunning_notice, [s.billing_account_id, invoice_id, step.name, self._suspension_announced_by(step)], "dunning.notice_failed")
        elif step.action == "retry_payment":
            if s.hard_declined:
                # A lost card or revoked mandate will not pay on retry; charging again only adds fees.
                await self._event("dunning.retry_skipped", f"{step.name}: retry skipped after a hard decline")
            else:
                await self._charge(invoice_id)
        elif step.action == "suspend":
            if not any(n.action == "reminder" for n in s.profile.dunning.steps if n.name in s.step_times):
                await self._event("dunning.suspension_skipped", f"{step.name}: no written notice was sent in this episode, so no suspension")
            else:
                await self._safely(BillingActivities.set_service_barring, [s.billing_account_id, "full", f"dunning:{invoice_id}:{step.name}"], "service.suspend_failed")
        elif step.action == "terminate":
            await self._event("dunning.termination_due", f"{step.name}: contract termination is due; handed to staff")
        s.step_times[step.name] = workflow.now()
        s.dunning = mark_step_done(s.dunning, step)
        await self._apply_payments()

    async def _handle_spending(self) -> None:
        """Each threshold of a cycle is told once; a hard cap reached in the current cycle bars outgoing use."""
        s = self.s
        events, self._spending = self._spending, []
        for event in events:
            # The EU roaming data cap's notices are de-duplicated apart from the spending limit's (same percentages).
            key = f"{event.period_start.isoformat()}:{event.threshold_percent}"
            if event.kind != "spending":
                key = f"{event.period_start.isoformat()}:{event.kind}:{event.threshold_percent}"
            if key in s.spending_notified or event.period_start < s.period.start:
                continue
            s.spending_notified.append(key)
            await self._safely(BillingActivities.send_spending_notice, [s.billing_account_id, event], "spending.notice_failed")
            if event.hard_cap and event.threshold_percent >= 100 and s.spending_barred_period is None:
                s.spending_barred_period = event.period_start
                args = [s.billing_account_id, "outgoing", f"spending:{event.period_start.isoformat()}"]
                await self._safely(BillingActivities.set_service_barring, args + (["spending"] if self._episodes else []), "service.suspend_failed")
            if event.kind == "roamingData" and event.threshold_percent >= 100 and workflow.patched(PATCH_ROAMING_DATA_BAR):
                await self._bar_roaming_data(event.period_start)

    async def _bar_roaming_data(self, period_start) -> None:
        """The roaming data cap's cut-off (EU Roaming Regulation 2022/612): roaming data stops, once a cycle, unless the
        customer asked to continue in this cycle. Only roaming data: voice, SMS and domestic use go on."""
        s = self.s
        if s.roaming_barred_period is not None or s.roaming_continued_period == period_start:
            return
        s.roaming_barred_period = period_start
        await self._safely(BillingActivities.set_roaming_data_barring, [s.billing_account_id, True, period_start, "roaming data limit reached"],
                           "service.roaming_bar_failed")

    async def _continue_roaming_data(self) -> None:
        """The customer asked to go on using roaming data this cycle: lift the cut-off's barring and do not bar again in it."""
        s = self.s
        requests, self._roaming_continue = self._roaming_continue, []
        for request in requests:
            if s.roaming_continued_period == s.period.start:
                continue  # asked already in this cycle
            s.roaming_continued_period = s.period.start
            await self._event("roaming_data_cap.continued",
                              f"Roaming data continues past the roaming data limit until the cycle ends ({request.request_id}): {request.reason}")
            await self._lift_roaming_bar("the customer asked to continue")

    async def _lift_roaming_bar(self, why: str) -> None:
        s = self.s
        if s.roaming_barred_period is None:
            return
        barred, s.roaming_barred_period = s.roaming_barred_period, None
        await self._safely(BillingActivities.set_roaming_data_barring, [s.billing_account_id, False, barred, why], "service.roaming_restore_failed")

    async def _lift_spending_cap(self) -> None:
        """A new cycle starts with a fresh limit: lift the cap's barring unless dunning holds the lines barred."""
        s = self.s
        s.spending_notified = [k for k in s.spending_notified if k >= s.period.start.isoformat()]
        if s.roaming_barred_period is not None and s.roaming_barred_period < s.period.start:
            await self._lift_roaming_bar("a new cycle started")
        if s.spending_barred_period is None:
            return
        s.spending_barred_period = None
        if self._episodes and not s.dunning.suspended:
            # Lines a dunning episode barred stay barred (set_service_barring leaves them alone for the cap): it lifts them itself.
            await self._safely(BillingActivities.set_service_barring,
                               [s.billing_account_id, "none", f"spending-lifted:{s.period.start.isoformat()}", "spending"], "service.restore_failed")
        elif not s.dunning.suspended:
            await self._safely(
                BillingActivities.set_service_barring, [s.billing_account_id, "none", f"spending-lifted:{s.period.start.isoformat()}"], "service.restore_failed"
            )

    async def _safely(self, activity_method, args: list, failure_kind: str) -> None:
        """Runs an outward action whose permanent failure must not stop the account's billing: it is recorded for staff."""
        try:
            await workflow.execute_activity_method(activity_method, args=args, **EXTERNAL_CALL)
        except ActivityError as error:
            await self._event(failure_kind, f"{activity_method.__name__} failed: {activity_cause(error)}")

    async def _event(self, kind: str, message: str) -> None:
        await workflow.execute_activity_method(BillingActivities.record_account_event, args=[self.s.billing_account_id, kind, message], **DB_CALL)
