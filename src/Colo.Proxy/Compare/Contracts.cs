namespace Colo.Proxy;

/// <summary>Why the compare engine asks for a checkpoint.</summary>
public enum CheckpointReason
{
    /// <summary>PVM and SVM output differ.</summary>
    Mismatch = 0,
    /// <summary>Output held on either side for longer than <see cref="CompareOptions.CompareTimeout"/>.</summary>
    Timeout = 1,
    /// <summary>Held bytes exceeded <see cref="CompareOptions.MaxHeldBytes"/> or the connection table overflowed.</summary>
    QueueFull = 2,
    /// <summary>Requested by an operator (not raised by the engine itself).</summary>
    Operator = 3,
    /// <summary>Maximum epoch length reached (not raised by the engine itself).</summary>
    Periodic = 4,
}

/// <summary>
/// Receives the compare engine's decisions. Called synchronously from inside the engine's methods (under the
/// caller's lock): implementations must not call back into the <see cref="CompareEngine"/> and must not throw.
/// </summary>
public interface ICompareSink
{
    /// <summary>Sends one PVM frame to the client network. The span is only valid during the call; copy it to keep it.</summary>
    /// <param name="frame">The PVM's exact frame bytes.</param>
    void Release(ReadOnlySpan<byte> frame);

    /// <summary>Asks the checkpoint controller for a checkpoint. Raised at most once per reason per epoch.</summary>
    /// <param name="reason">Why.</param>
    void RequestCheckpoint(CheckpointReason reason);
}

/// <summary>Tuning of <see cref="CompareEngine"/>. All values are validated by the engine's constructor.</summary>
public sealed class CompareOptions
{
    /// <summary>
    /// How long output may stay held (PVM frames unmatched, or SVM output the PVM has not produced) before a
    /// <see cref="CheckpointReason.Timeout"/> checkpoint is requested. Default 1000 ms; must be positive.
    /// </summary>
    public TimeSpan CompareTimeout { get; set; } = TimeSpan.FromMilliseconds(1000);

    /// <summary>
    /// Global bound, in bytes, on held PVM frames plus buffered SVM frames/segments plus the capacity of the
    /// per-connection stream buffers (which hold the bytes by which one side is ahead of the other). Exceeding it requests a
    /// <see cref="CheckpointReason.QueueFull"/> checkpoint; PVM frames are still held (never dropped). SVM-side data
    /// beyond twice this bound is dropped (counted). Default 64 MiB; must be positive.
    /// </summary>
    public long MaxHeldBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>
    /// Per-connection bound, in bytes, on the connection's held PVM frames, buffered SVM segments and stream-buffer
    /// capacity. Exceeding it requests a <see cref="CheckpointReason.QueueFull"/> checkpoint (nothing is dropped), so one
    /// bulk transfer cannot take the whole <see cref="MaxHeldBytes"/>. Default 16 MiB; must be positive.
    /// </summary>
    public long MaxHeldBytesPerConnection { get; set; } = 16L * 1024 * 1024;

    /// <summary>
    /// Bound on tracked TCP connections and on non-TCP flows with held frames. When full, closed and then idle
    /// connections with nothing held are evicted; if none can be evicted the table grows temporarily and a
    /// <see cref="CheckpointReason.QueueFull"/> checkpoint is requested. Default 65536; must be positive.
    /// </summary>
    public int MaxConnections { get; set; } = 65536;

    /// <summary>Per connection, how many out-of-order SVM segments wait for a gap to fill (more are dropped, counted). Default 64.</summary>
    public int MaxOutOfOrderSegments { get; set; } = 64;

    /// <summary>How long a connection closed on both sides (FIN/FIN or RST/RST) and fully released is kept for late ACKs. Default 10 s.</summary>
    public TimeSpan ClosedConnectionLinger { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>A connection with nothing held and no traffic for this long is forgotten. Default 10 min.</summary>
    public TimeSpan IdleConnectionTimeout { get; set; } = TimeSpan.FromMinutes(10);
}

/// <summary>
/// Counters of a <see cref="CompareEngine"/>. Updated under the engine caller's lock; reads from other threads see
/// recent (not necessarily mutually consistent) values.
/// </summary>
public sealed class CompareCounters
{
    internal long pvmFrames, svmFrames, pvmBytes, svmBytes, matchedFrames, matchedBytes, releasedFrames,
        releasedOnCheckpoint, releasedPassThrough, heldFrames, heldBytes, peakHeldBytes, connections, flows,
        connectionsEvicted, connectionTableOverflows, svmDropped, svmIgnored, commits, internalErrors,
        pvmBadFrames, svmBadFrames, mismatches;
    internal readonly long[] checkpointRequests = new long[5];
    // Indexed by (int)BadFrameKind; room for kinds appended later (a test checks every kind fits).
    internal readonly long[] badFrames = new long[32];

    /// <summary>PVM frames received (OnPvmFrame calls).</summary>
    public long PvmFrames => Volatile.Read(ref pvmFrames);
    /// <summary>SVM frames received (OnSvmFrame calls).</summary>
    public long SvmFrames => Volatile.Read(ref svmFrames);
    /// <summary>PVM bytes received (whole frames).</summary>
    public long PvmBytes => Volatile.Read(ref pvmBytes);
    /// <summary>SVM bytes received (whole frames).</summary>
    public long SvmBytes => Volatile.Read(ref svmBytes);
    /// <summary>PVM frames released because the SVM produced matching output.</summary>
    public long MatchedFrames => Volatile.Read(ref matchedFrames);
    /// <summary>TCP payload bytes compared equal between PVM and SVM.</summary>
    public long MatchedBytes => Volatile.Read(ref matchedBytes);
    /// <summary>All PVM frames released to the sink (matched, checkpoint, pass-through).</summary>
    public long ReleasedFrames => Volatile.Read(ref releasedFrames);
    /// <summary>PVM frames released by <see cref="CompareEngine.OnCheckpointCommitted()"/>.</summary>
    public long ReleasedOnCheckpoint => Volatile.Read(ref releasedOnCheckpoint);
    /// <summary>PVM frames released because <see cref="CompareEngine.PassThrough"/> was on.</summary>
    public long ReleasedPassThrough => Volatile.Read(ref releasedPassThrough);
    /// <summary>PVM frames currently held.</summary>
    public long HeldFrames => Volatile.Read(ref heldFrames);
    /// <summary>Bytes currently held: PVM frames, buffered SVM frames/segments, and stream-buffer capacity (see <see cref="CompareOptions.MaxHeldBytes"/>).</summary>
    public long HeldBytes => Volatile.Read(ref heldBytes);
    /// <summary>Highest <see cref="HeldBytes"/> seen.</summary>
    public long PeakHeldBytes => Volatile.Read(ref peakHeldBytes);
    /// <summary>TCP connections currently tracked.</summary>
    public long Connections => Volatile.Read(ref connections);
    /// <summary>Non-TCP flows currently holding frames.</summary>
    public long Flows => Volatile.Read(ref flows);
    /// <summary>Connections evicted because the table was full.</summary>
    public long ConnectionsEvicted => Volatile.Read(ref connectionsEvicted);
    /// <summary>Times a connection was added beyond <see cref="CompareOptions.MaxConnections"/>.</summary>
    public long ConnectionTableOverflows => Volatile.Read(ref connectionTableOverflows);
    /// <summary>SVM segments/frames/stream bytes dropped (out-of-order bound, hard memory bound).</summary>
    public long SvmDropped => Volatile.Read(ref svmDropped);
    /// <summary>SVM frames ignored while in pass-through.</summary>
    public long SvmIgnored => Volatile.Read(ref svmIgnored);
    /// <summary>Checkpoint commits processed.</summary>
    public long Commits => Volatile.Read(ref commits);
    /// <summary>Unexpected exceptions caught inside the engine (should stay 0).</summary>
    public long InternalErrors => Volatile.Read(ref internalErrors);
    /// <summary>Malformed PVM frames (held and compared byte-exact).</summary>
    public long PvmBadFrames => Volatile.Read(ref pvmBadFrames);
    /// <summary>Malformed SVM frames (dropped unless they equal a held malformed PVM frame).</summary>
    public long SvmBadFrames => Volatile.Read(ref svmBadFrames);
    /// <summary>Differences detected (each may or may not have raised a new checkpoint request).</summary>
    public long Mismatches => Volatile.Read(ref mismatches);

    /// <summary>Checkpoint requests raised for <see cref="CheckpointReason.Mismatch"/>.</summary>
    public long MismatchCheckpoints => GetCheckpointRequests(CheckpointReason.Mismatch);
    /// <summary>Checkpoint requests raised for <see cref="CheckpointReason.Timeout"/>.</summary>
    public long TimeoutCheckpoints => GetCheckpointRequests(CheckpointReason.Timeout);
    /// <summary>Checkpoint requests raised for <see cref="CheckpointReason.QueueFull"/>.</summary>
    public long QueueFullCheckpoints => GetCheckpointRequests(CheckpointReason.QueueFull);

    /// <summary>Non-zero malformed-frame counts by kind name (a new dictionary per read; for status reporting).</summary>
    public IReadOnlyDictionary<string, long> BadFramesByKind
    {
        get
        {
            var d = new Dictionary<string, long>();
            foreach (BadFrameKind k in Enum.GetValues<BadFrameKind>())
            {
                long n = GetBadFrames(k);
                if (n != 0)
                {
                    d[k.ToString()] = n;
                }
            }
            return d;
        }
    }

    /// <summary>Checkpoint requests actually raised to the sink for <paramref name="reason"/>.</summary>
    /// <param name="reason">The reason.</param>
    /// <returns>The count, or 0 for an undefined reason.</returns>
    public long GetCheckpointRequests(CheckpointReason reason) =>
        (uint)reason < (uint)checkpointRequests.Length ? Volatile.Read(ref checkpointRequests[(int)reason]) : 0;

    /// <summary>Malformed frames (both sides) of the given kind.</summary>
    /// <param name="kind">The kind.</param>
    /// <returns>The count, or 0 for an undefined kind.</returns>
    public long GetBadFrames(BadFrameKind kind) =>
        (uint)kind < (uint)badFrames.Length ? Volatile.Read(ref badFrames[(int)kind]) : 0;

    /// <summary>Sum of all checkpoint requests raised.</summary>
    public long TotalCheckpointRequests
    {
        get
        {
            long t = 0;
            for (int i = 0; i < checkpointRequests.Length; i++)
            {
                t += Volatile.Read(ref checkpointRequests[i]);
            }
            return t;
        }
    }
}

/// <summary>
/// Position in the PVM's output at a checkpoint capture, from <see cref="CompareEngine.MarkCheckpoint"/>.
/// </summary>
/// <param name="Serial">Mark number (1, 2, ...); 0 is never a valid mark.</param>
/// <param name="Ordinal">Arrival ordinal of the first PVM frame after the capture.</param>
public readonly record struct CheckpointMark(long Serial, long Ordinal);
