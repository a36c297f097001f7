using System.Text.Json.Serialization;

namespace Colo.Demo;

/// <summary>The TCP header flags <see cref="WireCheck"/> looks at (the header's own bit values).</summary>
[Flags]
public enum TcpSegmentFlags : byte
{
    /// <summary>No flag.</summary>
    None = 0,

    /// <summary>FIN: the sender's last byte (occupies one sequence number).</summary>
    Fin = 0x01,

    /// <summary>SYN: the sender's initial sequence number (occupies one sequence number).</summary>
    Syn = 0x02,

    /// <summary>RST: the connection is reset.</summary>
    Rst = 0x04,

    /// <summary>PSH.</summary>
    Psh = 0x08,

    /// <summary>ACK: the acknowledgment number is valid.</summary>
    Ack = 0x10,
}

/// <summary>
/// Sequence-number continuity of one TCP connection as the client sees it on the wire (issue 4's required test:
/// after a failover the SVM's sequence space must not leak out un-rewritten). Fed with every captured segment of the
/// connection in capture order, it checks, per direction:
/// <list type="bullet">
/// <item>every segment starts at or below the highest <c>seq + length</c> seen so far (SYN and FIN count one):
/// a segment starting above it is a <b>gap</b> (bytes the client never saw, or a jump to another sequence space);
/// a segment starting before the first sequence number of the stream is a backward <b>jump</b>. Both count in
/// <see cref="WireDirectionCounters.SeqGaps"/>. A segment starting below the highest end (but within the stream) is a
/// <b>retransmission</b>;</item>
/// <item>no acknowledgment number exceeds the highest <c>seq + length</c> the other side sent (<see cref="WireDirectionCounters.AckBeyondSent"/>);</item>
/// <item>RST segments are counted (<see cref="WireDirectionCounters.Rsts"/>).</item>
/// </list>
/// Sequence numbers are compared modulo 2^32 (RFC 1982 serial arithmetic), so a stream wrapping at 2^32 is continuous.
/// Every gap is also followed (<see cref="Gaps"/>): it is <b>filled</b> when later segments (retransmissions) cover
/// the missing range, which tells a lost segment recovered by TCP from a jump into another sequence space (never filled).
/// The first <see cref="MaxContextAnomalies"/> anomalies carry the segments around them (<see cref="WireAnomaly.Context"/>).
/// A pure class (no I/O, no clock); not thread-safe. Memory is bounded: counters, at most
/// <see cref="MaxAnomalies"/> anomaly records, <see cref="MaxGaps"/> gap records, a ring of the last
/// <see cref="ContextSegments"/> segments and one bucket per second of guest segments (at most <see cref="MaxSeconds"/>).
/// </summary>
public sealed class WireCheck
{
    /// <summary>Default of <see cref="MaxAnomalies"/>.</summary>
    public const int DefaultMaxAnomalies = 16;

    /// <summary>Most per-second buckets kept (about 10 hours); later seconds are not bucketed (the counters go on).</summary>
    public const int MaxSeconds = 36_000;

    /// <summary>Most gap records kept; later gaps are counted (and never reported as filled).</summary>
    public const int MaxGaps = 64;

    /// <summary>How many anomalies get the segments around them in <see cref="WireAnomaly.Context"/>.</summary>
    public const int MaxContextAnomalies = 4;

    /// <summary>Segments recorded before and after an anomaly in its <see cref="WireAnomaly.Context"/>.</summary>
    public const int ContextSegments = 8;

    private readonly Side _guest = new("guest");
    private readonly Side _client = new("client");
    private readonly List<WireAnomaly> _anomalies = [];
    private readonly List<WireGap> _gaps = [];
    private readonly List<WireSecond> _seconds = [];
    private readonly Note[] _ring = new Note[ContextSegments];
    private int _ringCount;
    private int _ringNext;
    private WireAnomaly? _contextAfter;
    private int _contextAfterLeft;

    /// <summary>Creates a check for one connection.</summary>
    /// <param name="maxAnomalies">Most anomaly records kept (the counters go on); 0 keeps none.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxAnomalies"/> is negative.</exception>
    public WireCheck(int maxAnomalies = DefaultMaxAnomalies)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxAnomalies);
        MaxAnomalies = maxAnomalies;
    }

    /// <summary>Most anomaly records kept.</summary>
    public int MaxAnomalies { get; }

    /// <summary>Counters of the guest→client direction.</summary>
    public WireDirectionCounters Guest => _guest.Counters;

    /// <summary>Counters of the client→guest direction.</summary>
    public WireDirectionCounters Client => _client.Counters;

    /// <summary>True when the client's SYN and the guest's SYN-ACK were both seen (the streams' first sequence numbers are known exactly).</summary>
    public bool HandshakeSeen => _client.SynSeen && _guest.SynSeen;

    /// <summary>Anomalies (gaps, jumps, RSTs, acknowledgments beyond what was sent) in capture order; at most <see cref="MaxAnomalies"/>.</summary>
    public IReadOnlyList<WireAnomaly> Anomalies => _anomalies;

    /// <summary>Anomalies that were counted but not recorded because <see cref="MaxAnomalies"/> was reached.</summary>
    public long AnomaliesNotRecorded { get; private set; }

    /// <summary>The first <see cref="MaxGaps"/> gaps and jumps of both directions, with whether (and when) each was filled.</summary>
    public IReadOnlyList<WireGap> Gaps => _gaps;

    /// <summary>Guest→client segments per second of capture time (Unix seconds), in capture order.</summary>
    public IReadOnlyList<WireSecond> GuestSegmentsPerSecond => _seconds;

    /// <summary>True once the guest sent a FIN and the client sent a FIN (the connection is closing or closed).</summary>
    public bool BothFinSeen => _guest.FinSeen && _client.FinSeen;

    /// <summary>True once either side sent an RST.</summary>
    public bool RstSeen => _guest.Counters.Rsts + _client.Counters.Rsts > 0;

    /// <summary>The client's initial sequence number, when its SYN was seen.</summary>
    public uint? ClientIsn => _client.SynSeen ? _client.Isn : null;

    /// <summary>Records one guest→client segment.</summary>
    /// <param name="seq">Sequence number.</param>
    /// <param name="ack">Acknowledgment number (checked only with <see cref="TcpSegmentFlags.Ack"/>).</param>
    /// <param name="flags">Header flags.</param>
    /// <param name="payloadLength">TCP payload bytes (0 for a pure ACK).</param>
    /// <param name="atMs">Capture time, Unix milliseconds (used for the records and the per-second buckets).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="payloadLength"/> is negative.</exception>
    public void OnGuestSegment(uint seq, uint ack, TcpSegmentFlags flags, int payloadLength, long atMs)
    {
        Observe(_guest, _client, "guest", seq, ack, flags, payloadLength, atMs);
        long second = Math.DivRem(atMs, 1000, out long rem) - (rem < 0 ? 1 : 0);
        if (_seconds.Count > 0 && _seconds[^1].AtS == second)
            _seconds[^1].Segments++;
        else if (_seconds.Count < MaxSeconds)
            _seconds.Add(new WireSecond { AtS = second, Segments = 1 });
    }

    /// <summary>Records one client→guest segment.</summary>
    /// <param name="seq">Sequence number.</param>
    /// <param name="ack">Acknowledgment number (checked only with <see cref="TcpSegmentFlags.Ack"/>).</param>
    /// <param name="flags">Header flags.</param>
    /// <param name="payloadLength">TCP payload bytes.</param>
    /// <param name="atMs">Capture time, Unix milliseconds.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="payloadLength"/> is negative.</exception>
    public void OnClientSegment(uint seq, uint ack, TcpSegmentFlags flags, int payloadLength, long atMs) =>
        Observe(_client, _guest, "client", seq, ack, flags, payloadLength, atMs);

    private void Observe(Side self, Side peer, string direction, uint seq, uint ack, TcpSegmentFlags flags, int payloadLength, long atMs)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(payloadLength);
        int anomaliesBefore = _anomalies.Count;
        ObserveCore(self, peer, direction, seq, ack, flags, payloadLength, atMs);
        var note = new Note(atMs, self, seq, ack, flags, payloadLength);
        if (_contextAfter is not null && anomaliesBefore == _anomalies.Count)
        {
            _contextAfter.Context!.Add(Describe(note, _contextAfter.AtMs));
            if (--_contextAfterLeft == 0)
                _contextAfter = null;
        }
        for (int i = anomaliesBefore; i < _anomalies.Count; i++)
        {
            WireAnomaly a = _anomalies[i];
            if (i >= MaxContextAnomalies)
                break;
            a.Context = [];
            for (int k = 0; k < _ringCount; k++)
                a.Context.Add(Describe(_ring[(_ringNext - _ringCount + k + ContextSegments) % ContextSegments], a.AtMs));
            a.Context.Add(Describe(note, a.AtMs) + "  <-- " + a.Kind);
            _contextAfter = a;
            _contextAfterLeft = ContextSegments;
        }
        _ring[_ringNext] = note;
        _ringNext = (_ringNext + 1) % ContextSegments;
        _ringCount = Math.Min(_ringCount + 1, ContextSegments);
    }

    private static string Describe(in Note n, long anomalyAtMs)
    {
        long offset = n.Side.Started ? unchecked((int)(n.Seq - n.Side.Isn)) : 0;
        return string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{n.AtMs - anomalyAtMs:+0;-0}ms {n.Side.Name} seq={n.Seq} (+{offset}) ack={n.Ack} len={n.Length} [{n.Flags}]");
    }

    private void ObserveCore(Side self, Side peer, string direction, uint seq, uint ack, TcpSegmentFlags flags, int payloadLength, long atMs)
    {
        WireDirectionCounters c = self.Counters;
        c.Segments++;
        if ((flags & TcpSegmentFlags.Rst) != 0)
        {
            // An RST's sequence number need not continue the stream (e.g. 0 for a reset of an unknown connection).
            c.Rsts++;
            Record(atMs, "rst", direction, seq, self.Started ? self.Next : seq, 0, payloadLength, flags);
            return;
        }

        bool syn = (flags & TcpSegmentFlags.Syn) != 0;
        bool fin = (flags & TcpSegmentFlags.Fin) != 0;
        long span = (long)payloadLength + (syn ? 1 : 0) + (fin ? 1 : 0);
        if (!self.Started)
        {
            self.Started = true;
            self.Isn = seq;
            self.Next = seq;
            self.NextOffset = 0;
        }
        if (syn && !self.SynSeen)
            self.SynSeen = true;
        if (fin)
            self.FinSeen = true;

        int delta = unchecked((int)(seq - self.Next));
        long offset = self.NextOffset + delta;
        if (delta < 0)
        {
            if (offset < 0)
            {
                // Starts before the stream's first sequence number: another sequence space (or a random number).
                c.SeqGaps++;
                Record(atMs, "jump_before_start", direction, seq, self.Next, delta, payloadLength, flags);
                AddGap(self, atMs, "jump_before_start", delta, -1);
            }
            else
            {
                c.Retransmissions++;
                Fill(self, offset, offset + span, atMs);
                Advance(self, seq, span);
            }
        }
        else
        {
            if (delta > 0)
            {
                c.SeqGaps++;
                Record(atMs, "gap", direction, seq, self.Next, delta, payloadLength, flags);
                AddGap(self, atMs, "gap", delta, self.NextOffset);
                // Go on from here: a jump to another sequence space is counted once, a hole filled later by a
                // retransmission then counts as a retransmission.
                self.Next = seq;
                self.NextOffset += delta;
            }
            Advance(self, seq, span);
        }

        if ((flags & TcpSegmentFlags.Ack) != 0 && peer.Started)
        {
            int beyond = unchecked((int)(ack - peer.Next));
            if (beyond > 0)
            {
                c.AckBeyondSent++;
                Record(atMs, "ack_beyond_sent", direction, ack, peer.Next, beyond, payloadLength, flags);
            }
        }
    }

    /// <summary>Records a gap (hole [<paramref name="holeStart"/>, + <paramref name="delta"/>) in stream offsets) or a jump (<paramref name="holeStart"/> −1: never fillable).</summary>
    private void AddGap(Side self, long atMs, string kind, long delta, long holeStart)
    {
        if (_gaps.Count >= MaxGaps)
            return;
        var gap = new WireGap { AtMs = atMs, Kind = kind, Direction = self.Name, Delta = delta };
        _gaps.Add(gap);
        if (holeStart >= 0 && self.Holes.Count < MaxGaps)
            self.Holes.Add(new Hole(holeStart, holeStart + delta, gap));
    }

    /// <summary>
    /// A segment covering [<paramref name="start"/>, <paramref name="end"/>) (stream offsets) arrived below the highest end:
    /// it may fill holes, in any order (a tail-loss probe resends a hole's last segment first).
    /// </summary>
    private static void Fill(Side self, long start, long end, long atMs)
    {
        if (end <= start)
            return;
        for (int i = self.Holes.Count - 1; i >= 0; i--)
        {
            Hole h = self.Holes[i];
            h.Cover(start, end);
            if (h.Missing.Count == 0)
            {
                h.Gap.FilledAtMs = atMs;
                self.Holes.RemoveAt(i);
            }
        }
    }

    private static void Advance(Side self, uint seq, long span)
    {
        uint end = unchecked(seq + (uint)span);
        int ahead = unchecked((int)(end - self.Next));
        if (ahead > 0)
        {
            self.Next = end;
            self.NextOffset += ahead;
        }
    }

    private void Record(long atMs, string kind, string direction, uint seq, uint expected, long delta, int length, TcpSegmentFlags flags)
    {
        if (_anomalies.Count >= MaxAnomalies)
        {
            AnomaliesNotRecorded++;
            return;
        }
        _anomalies.Add(new WireAnomaly
        {
            AtMs = atMs,
            Kind = kind,
            Direction = direction,
            Seq = seq,
            Expected = expected,
            Delta = delta,
            Length = length,
            Flags = flags.ToString(),
        });
    }

    private readonly record struct Note(long AtMs, Side Side, uint Seq, uint Ack, TcpSegmentFlags Flags, int Length);

    /// <summary>A hole's byte ranges (stream offsets) not covered yet, in order; at most <see cref="MaxPieces"/> of them.</summary>
    private sealed class Hole(long start, long end, WireGap gap)
    {
        /// <summary>Most separate missing ranges tracked per hole; a fill that would split further is ignored (the hole stays open).</summary>
        private const int MaxPieces = 64;

        public readonly List<(long Start, long End)> Missing = [(start, end)];
        public readonly WireGap Gap = gap;

        /// <summary>Removes [<paramref name="start"/>, <paramref name="end"/>) from the missing ranges.</summary>
        public void Cover(long start, long end)
        {
            for (int k = Missing.Count - 1; k >= 0; k--)
            {
                (long a, long b) = Missing[k];
                if (end <= a || start >= b)
                    continue;
                bool left = a < start, right = end < b;
                if (left && right)
                {
                    if (Missing.Count >= MaxPieces)
                        continue;
                    Missing[k] = (a, start);
                    Missing.Insert(k + 1, (end, b));
                }
                else if (left)
                    Missing[k] = (a, start);
                else if (right)
                    Missing[k] = (end, b);
                else
                    Missing.RemoveAt(k);
            }
        }
    }

    private sealed class Side(string name)
    {
        public readonly string Name = name;
        public readonly WireDirectionCounters Counters = new();
        public readonly List<Hole> Holes = [];
        public bool Started;
        public bool SynSeen;
        public bool FinSeen;
        public uint Isn;

        /// <summary>Highest seq + length seen (modulo 2^32).</summary>
        public uint Next;

        /// <summary><see cref="Next"/> as an offset from the first sequence number seen (not wrapped).</summary>
        public long NextOffset;
    }
}

/// <summary>Per-direction counters of a <see cref="WireCheck"/>.</summary>
public sealed class WireDirectionCounters
{
    /// <summary>Segments seen.</summary>
    [JsonPropertyName("segments")]
    public long Segments { get; set; }

    /// <summary>Segments starting below the highest <c>seq + length</c> seen (within the stream).</summary>
    [JsonPropertyName("retransmissions")]
    public long Retransmissions { get; set; }

    /// <summary>Segments starting above the highest <c>seq + length</c> seen, or before the stream's first sequence number.</summary>
    [JsonPropertyName("seq_gaps")]
    public long SeqGaps { get; set; }

    /// <summary>RST segments.</summary>
    [JsonPropertyName("rsts")]
    public long Rsts { get; set; }

    /// <summary>Segments acknowledging more than the other side sent.</summary>
    [JsonPropertyName("ack_beyond_sent")]
    public long AckBeyondSent { get; set; }

    /// <summary>Adds <paramref name="other"/>'s counts to these.</summary>
    /// <param name="other">Counters to add.</param>
    public void Add(WireDirectionCounters other)
    {
        ArgumentNullException.ThrowIfNull(other);
        Segments += other.Segments;
        Retransmissions += other.Retransmissions;
        SeqGaps += other.SeqGaps;
        Rsts += other.Rsts;
        AckBeyondSent += other.AckBeyondSent;
    }
}

/// <summary>One irregular segment found by <see cref="WireCheck"/>, for the report.</summary>
public sealed class WireAnomaly
{
    /// <summary>Capture time, Unix milliseconds.</summary>
    [JsonPropertyName("at_ms")]
    public long AtMs { get; set; }

    /// <summary><c>gap</c>, <c>jump_before_start</c>, <c>rst</c> or <c>ack_beyond_sent</c>.</summary>
    [JsonPropertyName("kind")]
    public string Kind { get; set; } = "";

    /// <summary>Sender of the segment: <c>guest</c> or <c>client</c>.</summary>
    [JsonPropertyName("direction")]
    public string Direction { get; set; } = "";

    /// <summary>The segment's sequence number (for <c>ack_beyond_sent</c>: its acknowledgment number).</summary>
    [JsonPropertyName("seq")]
    public uint Seq { get; set; }

    /// <summary>The highest <c>seq + length</c> seen before it (for <c>ack_beyond_sent</c>: the other side's).</summary>
    [JsonPropertyName("expected")]
    public uint Expected { get; set; }

    /// <summary><c>seq − expected</c> modulo 2^32 as a signed number.</summary>
    [JsonPropertyName("delta")]
    public long Delta { get; set; }

    /// <summary>Payload bytes of the segment.</summary>
    [JsonPropertyName("length")]
    public int Length { get; set; }

    /// <summary>The segment's flags, e.g. <c>Psh, Ack</c>.</summary>
    [JsonPropertyName("flags")]
    public string Flags { get; set; } = "";

    /// <summary>
    /// For the first few anomalies: the connection's segments before it, itself (marked <c>&lt;--</c>) and after it, as
    /// <c>+Nms side seq=S (+offset in the stream) ack=A len=L [flags]</c>; null (omitted) otherwise.
    /// </summary>
    [JsonPropertyName("context")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<string>? Context { get; set; }
}

/// <summary>One gap or jump found by <see cref="WireCheck"/> and whether later segments filled it.</summary>
public sealed class WireGap
{
    /// <summary>When the segment beyond the hole was captured, Unix milliseconds.</summary>
    [JsonPropertyName("at_ms")]
    public long AtMs { get; set; }

    /// <summary><c>gap</c> (a segment starting beyond the highest end seen) or <c>jump_before_start</c> (never fillable).</summary>
    [JsonPropertyName("kind")]
    public string Kind { get; set; } = "";

    /// <summary>Sender: <c>guest</c> or <c>client</c>.</summary>
    [JsonPropertyName("direction")]
    public string Direction { get; set; } = "";

    /// <summary>Size of the hole in sequence numbers (for a jump: the negative distance).</summary>
    [JsonPropertyName("delta")]
    public long Delta { get; set; }

    /// <summary>When later segments had covered the whole hole (a lost segment retransmitted), Unix milliseconds; null when never.</summary>
    [JsonPropertyName("filled_at_ms")]
    public long? FilledAtMs { get; set; }
}

/// <summary>Guest→client segments seen in one second.</summary>
public sealed class WireSecond
{
    /// <summary>The second, Unix time.</summary>
    [JsonPropertyName("at_s")]
    public long AtS { get; set; }

    /// <summary>Segments captured in it.</summary>
    [JsonPropertyName("segments")]
    public long Segments { get; set; }
}
