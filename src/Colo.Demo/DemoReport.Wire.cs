using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;

namespace Colo.Demo;

/// <summary>The wire probe's parts of the report (<c>wire</c>, <c>icmp</c>, <c>arp</c>).</summary>
public sealed partial class DemoReport
{
    /// <summary>An echo request sent this long before the kill may lose its reply to the failover (milliseconds).</summary>
    public const long FailoverWindowBeforeMs = 1000;

    /// <summary>An echo request sent up to this long after the failover was detected may go unanswered (milliseconds; the accepted client gap).</summary>
    public const long FailoverWindowAfterMs = MaxClientGapMs;

    /// <summary>
    /// Fills <see cref="Wire"/>, <see cref="Icmp"/> and <see cref="Arp"/> from the client's probe (all three null when
    /// <paramref name="probe"/> is null). "Before the failover" means before the kill; "after" means at or after the
    /// later of the kill and its detection (<paramref name="detectedAtUnixMs"/>; the kill alone when never detected).
    /// Without a kill (<paramref name="killedAtUnixMs"/> ≤ 0) everything counts as before. The failover window runs from
    /// <see cref="FailoverWindowBeforeMs"/> before the kill to <see cref="FailoverWindowAfterMs"/> after the failover: an
    /// unanswered echo request sent in it is counted apart, and a guest→client gap in it that a retransmission filled
    /// within <see cref="FailoverWindowAfterMs"/> counts as <see cref="DemoWireSummary.FailoverLossGaps"/> instead of
    /// <see cref="DemoWireSummary.SeqGaps"/>.
    /// Does not update <see cref="Ok"/>.
    /// </summary>
    /// <param name="probe">The client's <see cref="ClientWorkloadResult.Wire"/>.</param>
    /// <param name="killedAtUnixMs">Kill time, Unix milliseconds; 0 when nothing was killed.</param>
    /// <param name="detectedAtUnixMs">When the surviving daemon declared its peer lost, Unix milliseconds; 0 when it did not.</param>
    public void ApplyWireProbe(WireProbeResult? probe, long killedAtUnixMs, long detectedAtUnixMs)
    {
        if (probe is null)
        {
            Wire = null;
            Icmp = null;
            Arp = null;
            return;
        }
        bool killed = killedAtUnixMs > 0;
        long failoverAt = killed ? Math.Max(killedAtUnixMs, detectedAtUnixMs) : long.MaxValue;
        long beforeLimit = killed ? killedAtUnixMs : long.MaxValue;
        bool InFailoverWindow(long atMs) => killed && atMs >= killedAtUnixMs - FailoverWindowBeforeMs && atMs <= failoverAt + FailoverWindowAfterMs;

        WireTcpResult tcp = probe.Tcp;
        // A guest→client hole in the failover window that a retransmission filled soon after is the in-flight output
        // lost with the primary (the SVM's copy went to the dead primary for comparison) and resent by the SVM's TCP. A
        // hole covered only seconds later is the stream catching up with a jump ahead, not a retransmission.
        long failoverLossGaps = tcp.Gaps.Count(g => g.Direction == "guest" && g.Kind == "gap" &&
                                                    g.FilledAtMs - g.AtMs <= FailoverWindowAfterMs && InFailoverWindow(g.AtMs));
        Wire = new DemoWireSummary
        {
            Segments = tcp.Guest.Segments,
            Retransmissions = tcp.Guest.Retransmissions,
            SeqGaps = tcp.Guest.SeqGaps - failoverLossGaps,
            FailoverLossGaps = failoverLossGaps,
            ClientRsts = tcp.Client.Rsts,
            AckBeyondSent = tcp.Client.AckBeyondSent,
            GuestRsts = tcp.Guest.Rsts,
            GuestAckBeyondSent = tcp.Guest.AckBeyondSent,
            ClientSegments = tcp.Client.Segments,
            ClientRetransmissions = tcp.Client.Retransmissions,
            ClientSeqGaps = tcp.Client.SeqGaps,
            SegmentsAfterFailover = killed ? tcp.GuestSegmentsPerSecond.Where(s => s.AtS * 1000 >= failoverAt).Sum(s => s.Segments) : 0,
            Connections = tcp.Connections,
            HandshakeSeen = tcp.HandshakeSeen,
            Connection = tcp.Connection,
            CaptureDrops = probe.CaptureDrops,
            Anomalies = tcp.Anomalies.Count > 0 ? [.. tcp.Anomalies] : null,
            Gaps = tcp.Gaps.Count > 0 ? [.. tcp.Gaps] : null,
            OtherTcp = new DemoOtherTcpSummary
            {
                Connections = probe.OtherTcp.Connections,
                Segments = probe.OtherTcp.Guest.Segments,
                Retransmissions = probe.OtherTcp.Guest.Retransmissions,
                SeqGaps = probe.OtherTcp.Guest.SeqGaps,
                ClientRsts = probe.OtherTcp.Client.Rsts,
                GuestRsts = probe.OtherTcp.Guest.Rsts,
                AckBeyondSent = probe.OtherTcp.Client.AckBeyondSent + probe.OtherTcp.Guest.AckBeyondSent,
                Anomalies = probe.OtherTcp.Anomalies.Count > 0 ? [.. probe.OtherTcp.Anomalies] : null,
            },
            Error = probe.Error,
        };

        List<PingRecord> pings = probe.Icmp.Pings;
        var rtts = pings.Where(p => p.ReplyMs is not null).Select(p => (double)(p.ReplyMs!.Value - p.SentMs)).ToList();
        var unanswered = pings.Where(p => p.ReplyMs is null).ToList();
        Icmp = new DemoIcmpSummary
        {
            Sent = probe.Icmp.Sent,
            Answered = rtts.Count,
            PayloadMismatches = probe.Icmp.PayloadMismatches,
            Unanswered = probe.Icmp.Sent - rtts.Count,
            UnansweredInFailoverWindow = unanswered.Count(p => InFailoverWindow(p.SentMs)),
            AnsweredBeforeFailover = pings.Count(p => p.ReplyMs < beforeLimit),
            AnsweredAfterFailover = killed ? pings.Count(p => p.ReplyMs >= failoverAt) : 0,
            SendErrors = probe.Icmp.SendErrors,
            DuplicateReplies = probe.Icmp.DuplicateReplies,
            WrongMac = probe.Icmp.WrongMac,
            RttMsP50 = Percentile(rtts, 50),
            RttMsMax = rtts.Count > 0 ? rtts.Max() : 0,
        };

        WireArpResult arp = probe.Arp;
        Arp = new DemoArpSummary
        {
            Requests = arp.ProbesSent + arp.KernelRequests,
            Replies = arp.Replies,
            WrongMac = arp.WrongMac,
            RepliesBeforeFailover = arp.ReplyMs.Count(t => t < beforeLimit),
            RepliesAfterFailover = killed ? arp.ReplyMs.Count(t => t >= failoverAt) : 0,
            KernelRequests = arp.KernelRequests,
            Gratuitous = arp.Gratuitous,
        };
    }

    /// <summary>
    /// The wire probe's rules, each only when its section is present: <c>wire</c>: the probe ran without error, the
    /// INCR connection was captured from its handshake, <c>seq_gaps</c>, <c>client_rsts</c>, <c>ack_beyond_sent</c>,
    /// <c>guest_rsts</c> and <c>guest_ack_beyond_sent</c> are 0; <c>icmp</c>: no payload mismatch, no reply from another
    /// MAC, at least one reply before the failover and (with a kill) one after it; <c>arp</c>: no wrong MAC, at least one
    /// reply before the failover and (with a kill) one after it. Unanswered echo requests are not a failure (ICMP is
    /// unreliable; see <see cref="DemoIcmpSummary.UnansweredInFailoverWindow"/>).
    /// </summary>
    /// <param name="failed">Receives one description per failed rule.</param>
    private void FailedWireRules(List<string> failed)
    {
        bool killed = Failover.KilledAtS >= 0;
        if (Wire is { } w)
        {
            if (w.Error is not null) failed.Add($"wire probe ran (error: {w.Error})");
            if (!w.HandshakeSeen || w.Segments == 0) failed.Add($"wire: the INCR connection captured from its handshake (handshake_seen {w.HandshakeSeen}, segments {w.Segments})");
            if (w.SeqGaps != 0) failed.Add($"wire.seq_gaps == 0 (was {w.SeqGaps})");
            if (w.ClientRsts != 0) failed.Add($"wire.client_rsts == 0 (was {w.ClientRsts})");
            if (w.AckBeyondSent != 0) failed.Add($"wire.ack_beyond_sent == 0 (was {w.AckBeyondSent})");
            if (w.GuestRsts != 0) failed.Add($"wire.guest_rsts == 0 (was {w.GuestRsts})");
            if (w.GuestAckBeyondSent != 0) failed.Add($"wire.guest_ack_beyond_sent == 0 (was {w.GuestAckBeyondSent})");
        }
        if (Icmp is { } i)
        {
            if (i.PayloadMismatches != 0) failed.Add($"icmp.payload_mismatches == 0 (was {i.PayloadMismatches})");
            if (i.WrongMac != 0) failed.Add($"icmp.wrong_mac == 0 (was {i.WrongMac})");
            if (i.AnsweredBeforeFailover == 0) failed.Add(killed ? "icmp: an echo reply before the failover" : "icmp: an echo reply");
            if (killed && i.AnsweredAfterFailover == 0) failed.Add("icmp: an echo reply after the failover");
        }
        if (Arp is { } a)
        {
            if (a.WrongMac != 0) failed.Add($"arp.wrong_mac == 0 (was {a.WrongMac})");
            if (a.RepliesBeforeFailover == 0) failed.Add(killed ? "arp: a reply before the failover" : "arp: a reply");
            if (killed && a.RepliesAfterFailover == 0) failed.Add("arp: a reply after the failover");
        }
    }

    private void AppendWireSummary(StringBuilder sb)
    {
        var ci = CultureInfo.InvariantCulture;
        if (Wire is { } w)
        {
            sb.AppendLine(ci, $"  wire (INCR conn): {w.Segments} guest segments ({w.SegmentsAfterFailover} after the failover), {w.Retransmissions} retransmissions, {w.SeqGaps} seq gaps, {w.FailoverLossGaps} failover loss gaps (refilled), {w.ClientRsts} client RSTs, {w.AckBeyondSent} acks beyond sent; {w.CaptureDrops} capture drops{(w.Error is null ? "" : "; ERROR " + w.Error)}");
        }
        if (Icmp is { } i && Arp is { } a)
        {
            sb.AppendLine(ci, $"  icmp / arp:      echo {i.Answered}/{i.Sent} answered ({i.AnsweredBeforeFailover} before, {i.AnsweredAfterFailover} after the failover; {i.Unanswered} unanswered, {i.UnansweredInFailoverWindow} of them in the failover window), {i.PayloadMismatches} payload mismatches; " +
                                $"arp {a.Replies} replies to {a.Requests} requests ({a.RepliesBeforeFailover} before, {a.RepliesAfterFailover} after), {a.WrongMac} wrong MAC");
        }
    }
}

/// <summary>Report section <c>wire</c>: the long-lived Redis INCR connection as captured on the client's LAN interface.</summary>
public sealed class DemoWireSummary
{
    /// <summary>Guest→client segments.</summary>
    [JsonPropertyName("segments")]
    public long Segments { get; set; }

    /// <summary>Guest→client segments starting below the highest sequence number seen (normal TCP retransmissions).</summary>
    [JsonPropertyName("retransmissions")]
    public long Retransmissions { get; set; }

    /// <summary>
    /// Guest→client segments starting beyond the highest <c>seq + length</c> seen, or before the stream's start (a gap
    /// or a jump), except the <see cref="FailoverLossGaps"/>; must be 0.
    /// </summary>
    [JsonPropertyName("seq_gaps")]
    public long SeqGaps { get; set; }

    /// <summary>
    /// Guest→client gaps in the failover window (1 s before the kill to 3 s after the failover) whose missing bytes a
    /// retransmission filled within 3 s: output the guest had sent just before the failover, lost with the primary and
    /// resent by the SVM's TCP (a later segment, e.g. an ACK, overtook the retransmission). Allowed; listed in <see cref="Gaps"/>.
    /// </summary>
    [JsonPropertyName("failover_loss_gaps")]
    public long FailoverLossGaps { get; set; }

    /// <summary>RSTs the client sent on the connection; must be 0.</summary>
    [JsonPropertyName("client_rsts")]
    public long ClientRsts { get; set; }

    /// <summary>Client segments acknowledging more than the guest sent; must be 0.</summary>
    [JsonPropertyName("ack_beyond_sent")]
    public long AckBeyondSent { get; set; }

    /// <summary>RSTs the guest sent on the connection; must be 0.</summary>
    [JsonPropertyName("guest_rsts")]
    public long GuestRsts { get; set; }

    /// <summary>Guest segments acknowledging more than the client sent; must be 0.</summary>
    [JsonPropertyName("guest_ack_beyond_sent")]
    public long GuestAckBeyondSent { get; set; }

    /// <summary>Client→guest segments.</summary>
    [JsonPropertyName("client_segments")]
    public long ClientSegments { get; set; }

    /// <summary>Client→guest retransmissions.</summary>
    [JsonPropertyName("client_retransmissions")]
    public long ClientRetransmissions { get; set; }

    /// <summary>Client→guest gaps (only a capture drop could cause one); informational.</summary>
    [JsonPropertyName("client_seq_gaps")]
    public long ClientSeqGaps { get; set; }

    /// <summary>Guest→client segments captured in the whole seconds after the failover (0 without a kill).</summary>
    [JsonPropertyName("segments_after_failover")]
    public long SegmentsAfterFailover { get; set; }

    /// <summary>Connections followed (1 unless the client reconnected).</summary>
    [JsonPropertyName("connections")]
    public int Connections { get; set; }

    /// <summary>True when every followed connection's SYN and SYN-ACK were captured.</summary>
    [JsonPropertyName("handshake_seen")]
    public bool HandshakeSeen { get; set; }

    /// <summary>The (last) followed connection, <c>client:port -> guest:port</c>.</summary>
    [JsonPropertyName("connection")]
    public string Connection { get; set; } = "";

    /// <summary>Frames the capture socket dropped (buffer full); a drop could show up as a gap.</summary>
    [JsonPropertyName("capture_drops")]
    public long CaptureDrops { get; set; }

    /// <summary>The first gaps, jumps, RSTs and acknowledgments beyond what was sent, with their sequence numbers; omitted when none.</summary>
    [JsonPropertyName("anomalies")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<WireAnomaly>? Anomalies { get; set; }

    /// <summary>Every gap and jump (both directions) with when it was filled; omitted when none.</summary>
    [JsonPropertyName("gaps")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<WireGap>? Gaps { get; set; }

    /// <summary>The other client↔guest connections (HTTP, redis-benchmark), informational.</summary>
    [JsonPropertyName("other_tcp")]
    public DemoOtherTcpSummary OtherTcp { get; set; } = new();

    /// <summary>Why the probe failed; omitted when it ran.</summary>
    [JsonPropertyName("error")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Error { get; set; }
}

/// <summary>Part <c>wire.other_tcp</c>: every other client↔guest TCP connection, summed; not part of <c>ok</c>.</summary>
public sealed class DemoOtherTcpSummary
{
    /// <summary>Connections seen.</summary>
    [JsonPropertyName("connections")]
    public long Connections { get; set; }

    /// <summary>Guest→client segments.</summary>
    [JsonPropertyName("segments")]
    public long Segments { get; set; }

    /// <summary>Guest→client retransmissions.</summary>
    [JsonPropertyName("retransmissions")]
    public long Retransmissions { get; set; }

    /// <summary>Guest→client gaps and jumps.</summary>
    [JsonPropertyName("seq_gaps")]
    public long SeqGaps { get; set; }

    /// <summary>RSTs the client sent.</summary>
    [JsonPropertyName("client_rsts")]
    public long ClientRsts { get; set; }

    /// <summary>RSTs the guest sent.</summary>
    [JsonPropertyName("guest_rsts")]
    public long GuestRsts { get; set; }

    /// <summary>Acknowledgments beyond what the other side sent, both directions.</summary>
    [JsonPropertyName("ack_beyond_sent")]
    public long AckBeyondSent { get; set; }

    /// <summary>The first anomalies; omitted when none.</summary>
    [JsonPropertyName("anomalies")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<WireAnomaly>? Anomalies { get; set; }
}

/// <summary>Report section <c>icmp</c>: echo requests from the client's IP stack to the guest.</summary>
public sealed class DemoIcmpSummary
{
    /// <summary>Echo requests sent.</summary>
    [JsonPropertyName("sent")]
    public long Sent { get; set; }

    /// <summary>Requests that got a reply.</summary>
    [JsonPropertyName("answered")]
    public long Answered { get; set; }

    /// <summary>Replies whose data differed from the request's; must be 0.</summary>
    [JsonPropertyName("payload_mismatches")]
    public long PayloadMismatches { get; set; }

    /// <summary>Requests without a reply.</summary>
    [JsonPropertyName("unanswered")]
    public long Unanswered { get; set; }

    /// <summary>Unanswered requests sent in the failover window (from 1 s before the kill to 3 s after the failover).</summary>
    [JsonPropertyName("unanswered_in_failover_window")]
    public long UnansweredInFailoverWindow { get; set; }

    /// <summary>Replies captured before the kill (all of them without a kill); must be at least 1.</summary>
    [JsonPropertyName("answered_before_failover")]
    public long AnsweredBeforeFailover { get; set; }

    /// <summary>Replies captured after the failover; at least 1 with a kill.</summary>
    [JsonPropertyName("answered_after_failover")]
    public long AnsweredAfterFailover { get; set; }

    /// <summary>Requests the kernel refused.</summary>
    [JsonPropertyName("send_errors")]
    public long SendErrors { get; set; }

    /// <summary>Second and later replies to one request.</summary>
    [JsonPropertyName("duplicate_replies")]
    public long DuplicateReplies { get; set; }

    /// <summary>Replies whose Ethernet source is not the guest's MAC; must be 0.</summary>
    [JsonPropertyName("wrong_mac")]
    public long WrongMac { get; set; }

    /// <summary>Median round trip of the answered requests, milliseconds (send to capture of the reply).</summary>
    [JsonPropertyName("rtt_ms_p50")]
    public double RttMsP50 { get; set; }

    /// <summary>Longest round trip, milliseconds.</summary>
    [JsonPropertyName("rtt_ms_max")]
    public double RttMsMax { get; set; }
}

/// <summary>Report section <c>arp</c>: ARP requests for the guest's address from the client.</summary>
public sealed class DemoArpSummary
{
    /// <summary>Requests for the guest's address: the probe's own broadcasts plus the client kernel's.</summary>
    [JsonPropertyName("requests")]
    public long Requests { get; set; }

    /// <summary>Replies from the guest's address to the client.</summary>
    [JsonPropertyName("replies")]
    public long Replies { get; set; }

    /// <summary>ARP packets claiming the guest's address with another MAC; must be 0.</summary>
    [JsonPropertyName("wrong_mac")]
    public long WrongMac { get; set; }

    /// <summary>Replies captured before the kill (all of them without a kill); must be at least 1.</summary>
    [JsonPropertyName("replies_before_failover")]
    public long RepliesBeforeFailover { get; set; }

    /// <summary>Replies captured after the failover; at least 1 with a kill.</summary>
    [JsonPropertyName("replies_after_failover")]
    public long RepliesAfterFailover { get; set; }

    /// <summary>The client kernel's own requests among <see cref="Requests"/>.</summary>
    [JsonPropertyName("kernel_requests")]
    public long KernelRequests { get; set; }

    /// <summary>Gratuitous ARPs for the guest's address (e.g. the secondary's announcement at failover).</summary>
    [JsonPropertyName("gratuitous")]
    public long Gratuitous { get; set; }
}
