using System.Text.Json.Serialization;

namespace Colo.Demo;

/// <summary>
/// What the client's wire probe (<see cref="WireCapture"/>) saw on the client LAN interface; written into the client
/// result as <c>"wire": {...}</c>. The demo's report (<see cref="DemoReport"/> sections <c>wire</c>, <c>icmp</c>,
/// <c>arp</c>) is computed from it once the kill and detection times are known.
/// </summary>
public sealed class WireProbeResult
{
    /// <summary>The captured interface (the demo: <c>br0</c> of the LAN namespace, which carries the client's address).</summary>
    [JsonPropertyName("interface")]
    public string Interface { get; set; } = "";

    /// <summary>Why the probe did not run or stopped early; null when it ran to the end.</summary>
    [JsonPropertyName("error")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Error { get; set; }

    /// <summary>Frames the kernel passed to the capture socket (including <see cref="CaptureDrops"/>).</summary>
    [JsonPropertyName("capture_packets")]
    public long CapturePackets { get; set; }

    /// <summary>Frames the kernel dropped because the capture socket's buffer was full (a drop can look like a sequence gap).</summary>
    [JsonPropertyName("capture_drops")]
    public long CaptureDrops { get; set; }

    /// <summary>Captured frames too short for their own headers.</summary>
    [JsonPropertyName("bad_frames")]
    public long BadFrames { get; set; }

    /// <summary>The long-lived Redis INCR connection(s) (one, unless the client had to reconnect).</summary>
    [JsonPropertyName("tcp")]
    public WireTcpResult Tcp { get; set; } = new();

    /// <summary>Every other TCP connection between the client and the guest (HTTP, redis-benchmark), summed; informational.</summary>
    [JsonPropertyName("other_tcp")]
    public WireOtherTcpResult OtherTcp { get; set; } = new();

    /// <summary>The ICMP echo probe.</summary>
    [JsonPropertyName("icmp")]
    public WireIcmpResult Icmp { get; set; } = new();

    /// <summary>The ARP probe.</summary>
    [JsonPropertyName("arp")]
    public WireArpResult Arp { get; set; } = new();
}

/// <summary>Sequence-number checks of the tracked long-lived connection(s) (see <see cref="WireCheck"/>).</summary>
public sealed class WireTcpResult
{
    /// <summary>Connections tracked: 1 when the INCR connection lived through the whole run.</summary>
    [JsonPropertyName("connections")]
    public int Connections { get; set; }

    /// <summary>The last tracked connection, <c>client-ip:port -> guest-ip:port</c>.</summary>
    [JsonPropertyName("connection")]
    public string Connection { get; set; } = "";

    /// <summary>True when the SYN and SYN-ACK of every tracked connection were captured.</summary>
    [JsonPropertyName("handshake_seen")]
    public bool HandshakeSeen { get; set; }

    /// <summary>Guest→client counters.</summary>
    [JsonPropertyName("guest")]
    public WireDirectionCounters Guest { get; set; } = new();

    /// <summary>Client→guest counters.</summary>
    [JsonPropertyName("client")]
    public WireDirectionCounters Client { get; set; } = new();

    /// <summary>The first anomalies (gaps, jumps, RSTs, acknowledgments beyond what was sent), with sequence numbers.</summary>
    [JsonPropertyName("anomalies")]
    public List<WireAnomaly> Anomalies { get; set; } = [];

    /// <summary>The first gaps and jumps (both directions), each with whether later segments filled it.</summary>
    [JsonPropertyName("gaps")]
    public List<WireGap> Gaps { get; set; } = [];

    /// <summary>Guest→client segments per second (Unix seconds), to tell how many came after the failover.</summary>
    [JsonPropertyName("guest_segments_per_s")]
    public List<WireSecond> GuestSegmentsPerSecond { get; set; } = [];
}

/// <summary>All other client↔guest TCP connections, summed (not part of the demo's acceptance rules).</summary>
public sealed class WireOtherTcpResult
{
    /// <summary>Connections seen (a client port reused by a new SYN counts again).</summary>
    [JsonPropertyName("connections")]
    public long Connections { get; set; }

    /// <summary>Connections whose first captured segment was not a SYN (their start is approximate).</summary>
    [JsonPropertyName("mid_stream")]
    public long MidStream { get; set; }

    /// <summary>Segments of connections not followed because the table was full.</summary>
    [JsonPropertyName("untracked_segments")]
    public long UntrackedSegments { get; set; }

    /// <summary>Guest→client counters.</summary>
    [JsonPropertyName("guest")]
    public WireDirectionCounters Guest { get; set; } = new();

    /// <summary>Client→guest counters.</summary>
    [JsonPropertyName("client")]
    public WireDirectionCounters Client { get; set; } = new();

    /// <summary>The first anomalies found on these connections.</summary>
    [JsonPropertyName("anomalies")]
    public List<WireAnomaly> Anomalies { get; set; } = [];
}

/// <summary>The ICMP echo probe: one request every interval from the client's own IP stack (raw ICMP socket).</summary>
public sealed class WireIcmpResult
{
    /// <summary>The echo identifier used.</summary>
    [JsonPropertyName("id")]
    public int Id { get; set; }

    /// <summary>Requests the probe handed to the kernel.</summary>
    [JsonPropertyName("sent")]
    public long Sent { get; set; }

    /// <summary>Requests the kernel refused (counted in <see cref="Sent"/> too, never answered).</summary>
    [JsonPropertyName("send_errors")]
    public long SendErrors { get; set; }

    /// <summary>The probe's echo requests captured leaving the interface.</summary>
    [JsonPropertyName("requests_on_wire")]
    public long RequestsOnWire { get; set; }

    /// <summary>Replies to a request that already had one.</summary>
    [JsonPropertyName("duplicate_replies")]
    public long DuplicateReplies { get; set; }

    /// <summary>Replies with the probe's identifier but a sequence number never sent.</summary>
    [JsonPropertyName("unmatched_replies")]
    public long UnmatchedReplies { get; set; }

    /// <summary>Replies whose data differs from the request's.</summary>
    [JsonPropertyName("payload_mismatches")]
    public long PayloadMismatches { get; set; }

    /// <summary>Replies whose Ethernet source is not the guest's MAC.</summary>
    [JsonPropertyName("wrong_mac")]
    public long WrongMac { get; set; }

    /// <summary>One record per request, in sequence order.</summary>
    [JsonPropertyName("pings")]
    public List<PingRecord> Pings { get; set; } = [];
}

/// <summary>One echo request and its first reply.</summary>
public sealed class PingRecord
{
    /// <summary>Echo sequence number.</summary>
    [JsonPropertyName("seq")]
    public int Seq { get; set; }

    /// <summary>When it was handed to the kernel, Unix milliseconds.</summary>
    [JsonPropertyName("sent_ms")]
    public long SentMs { get; set; }

    /// <summary>When the first reply was captured, Unix milliseconds; null when none came.</summary>
    [JsonPropertyName("reply_ms")]
    public long? ReplyMs { get; set; }

    /// <summary>False when the first reply's data differed from the request's (or the send failed).</summary>
    [JsonPropertyName("ok")]
    public bool Ok { get; set; } = true;
}

/// <summary>The ARP probe: a broadcast request for the guest's address every few pings, sent on the capture socket.</summary>
public sealed class WireArpResult
{
    /// <summary>Requests the probe sent itself.</summary>
    [JsonPropertyName("probes_sent")]
    public long ProbesSent { get; set; }

    /// <summary>Probe requests the socket refused.</summary>
    [JsonPropertyName("probe_send_errors")]
    public long ProbeSendErrors { get; set; }

    /// <summary>Requests for the guest's address the client's kernel sent (captured).</summary>
    [JsonPropertyName("kernel_requests")]
    public long KernelRequests { get; set; }

    /// <summary>Replies from the guest's address to the client's.</summary>
    [JsonPropertyName("replies")]
    public long Replies { get; set; }

    /// <summary>ARP packets claiming the guest's address with another MAC (sender hardware address or Ethernet source).</summary>
    [JsonPropertyName("wrong_mac")]
    public long WrongMac { get; set; }

    /// <summary>Gratuitous ARPs for the guest's address (sender = target address), e.g. the secondary's at failover.</summary>
    [JsonPropertyName("gratuitous")]
    public long Gratuitous { get; set; }

    /// <summary>When each of the first requests was sent (probe's and kernel's), Unix milliseconds.</summary>
    [JsonPropertyName("request_ms")]
    public List<long> RequestMs { get; set; } = [];

    /// <summary>When each of the first replies was captured, Unix milliseconds.</summary>
    [JsonPropertyName("reply_ms")]
    public List<long> ReplyMs { get; set; } = [];
}
