namespace Colo.Proxy;

// Non-TCP output (UDP, ICMP, ARP, ICMPv6, IP fragments, other protocols and ethertypes, malformed frames): per-flow
// FIFO pairing of PVM and SVM frames, compared by the region that must agree.
public sealed partial class CompareEngine
{
    /// <summary>
    /// The compared part of a non-TCP frame: <see cref="Length"/> bytes at <see cref="Offset"/>, except
    /// <see cref="HoleLength"/> bytes at <see cref="HoleOffset"/> (relative to the region) that may legitimately differ.
    /// </summary>
    private readonly struct CompareRegion(int offset, int length, int holeOffset = 0, int holeLength = 0)
    {
        public readonly int Offset = offset;
        public readonly int Length = length;
        public readonly int HoleOffset = holeOffset;
        public readonly int HoleLength = holeLength;
    }

    /// <summary>The flow key of a malformed frame: all malformed frames of one side share one byte-exact FIFO.</summary>
    private static FlowKey BadFrameKey => new((byte)PacketKind.Other, 0xFF, 0, 0, 0, 0, 0);

    /// <summary>
    /// What pairs a non-TCP frame (the key) and what must agree (the region). Fields that legitimately differ between
    /// the VMs are outside both: IPv4 id, TTL, header checksum; IPv6 hop limit, flow label, traffic class; the ICMPv6
    /// checksum; an IPv6 fragment's identification. Ethernet padding is never compared for parsed kinds.
    /// </summary>
    private static void GetOtherKey(in PacketView v, out FlowKey key, out CompareRegion region)
    {
        switch (v.Kind)
        {
            case PacketKind.Arp:
                // The whole ARP packet (padding excluded).
                key = new FlowKey((byte)PacketKind.Arp, 0, v.EtherType, 0, 0, 0, 0);
                region = new CompareRegion(v.PayloadOffset, v.PayloadLength);
                break;
            case PacketKind.Icmp:
                // The whole ICMP message (type, code, checksum, body).
                key = new FlowKey((byte)PacketKind.Icmp, v.Protocol, v.EtherType, v.SrcAddress, v.DstAddress, 0, 0);
                region = new CompareRegion(v.PayloadOffset, v.PayloadLength);
                break;
            case PacketKind.Udp:
            case PacketKind.Udp6:
                // The UDP payload; ports and addresses are in the key.
                key = new FlowKey((byte)v.Kind, v.Protocol, v.EtherType, v.SrcAddress, v.DstAddress, v.SrcPort, v.DstPort);
                region = new CompareRegion(v.PayloadOffset, v.PayloadLength);
                break;
            case PacketKind.Icmp6:
                // Type, code and everything after the checksum: echo id/seq/data; for neighbour discovery (133-137)
                // the flags, target address and options, byte-exact. The checksum (bytes 2-3) is the hole.
                key = new FlowKey((byte)PacketKind.Icmp6, v.Protocol, v.EtherType, v.SrcAddress, v.DstAddress, 0, 0);
                region = new CompareRegion(v.PayloadOffset, v.PayloadLength, 2, 2);
                break;
            case PacketKind.OtherIPv4:
                // Protocol and addresses are in the key; IP id, TTL and checksum are ignored. Fragments carry their
                // fragment field in the key so the same fragment of both sides pairs up.
                key = new FlowKey((byte)PacketKind.OtherIPv4, v.Protocol, v.FragmentField, v.SrcAddress, v.DstAddress, 0, 0);
                region = new CompareRegion(v.PayloadOffset, v.PayloadLength);
                break;
            case PacketKind.OtherIPv6:
                // The IPv6 payload (extension headers included) byte-exact; the next header where parsing stopped and the
                // fragment offset/M word are in the key. A fragment's identification (like the IPv4 id) is the hole.
                key = new FlowKey((byte)PacketKind.OtherIPv6, v.Protocol, v.FragmentField, v.SrcAddress, v.DstAddress, 0, 0);
                region = v.FragmentHeaderOffset != 0
                    ? new CompareRegion(v.PayloadOffset, v.PayloadLength, v.FragmentHeaderOffset + 4 - v.PayloadOffset, 4)
                    : new CompareRegion(v.PayloadOffset, v.PayloadLength);
                break;
            default:
                // Unknown ethertype: the whole frame, byte-exact, one FIFO per ethertype.
                key = new FlowKey((byte)PacketKind.Other, 0, v.EtherType, 0, 0, 0, 0);
                region = new CompareRegion(0, v.Frame.Length);
                break;
        }
    }

    /// <summary>True when a held frame's compared region equals <paramref name="frame"/>'s (outside the hole).</summary>
    private static bool RegionEquals(HeldFrame held, ReadOnlySpan<byte> frame, in CompareRegion r)
    {
        if (held.KeyLength != r.Length || held.KeyHoleOffset != r.HoleOffset || held.KeyHoleLength != r.HoleLength)
        {
            return false;
        }
        ReadOnlySpan<byte> a = held.Key;
        ReadOnlySpan<byte> b = frame.Slice(r.Offset, r.Length);
        int holeEnd = r.HoleOffset + r.HoleLength;
        if (r.HoleLength == 0 || (uint)holeEnd > (uint)a.Length)
        {
            return a.SequenceEqual(b);
        }
        return a.Slice(0, r.HoleOffset).SequenceEqual(b.Slice(0, r.HoleOffset)) && a.Slice(holeEnd).SequenceEqual(b.Slice(holeEnd));
    }

    private static void SetRegion(HeldFrame f, in CompareRegion r)
    {
        f.KeyOffset = r.Offset;
        f.KeyLength = r.Length;
        f.KeyHoleOffset = r.HoleOffset;
        f.KeyHoleLength = r.HoleLength;
    }

    private void PvmOther(ReadOnlySpan<byte> frame, FlowKey key, in CompareRegion region, long now)
    {
        OtherFlow? flow = GetFlow(key);
        if (flow.Pvm.IsEmpty && flow.Svm.Head is { } s)
        {
            if (RegionEquals(s, frame, in region))
            {
                flow.Svm.Dequeue();
                _svmHeld.Remove(s);
                ReturnFrame(s);
                Counters.matchedFrames++;
                Counters.releasedFrames++;
                _sink.Release(frame);
                RemoveFlowIfEmpty(flow);
                return;
            }
            if (!_requested[(int)CheckpointReason.Mismatch])
                LastCause = $"mismatch on {Describe(flow.Key)}";
            Counters.mismatches++;
            Request(CheckpointReason.Mismatch);
        }
        HeldFrame f = Hold(frame, now, flow);
        SetRegion(f, in region);
        flow.Pvm.Enqueue(f);
    }

    private void SvmOther(ReadOnlySpan<byte> frame, FlowKey key, in CompareRegion region, long now)
    {
        OtherFlow flow = GetFlow(key);
        if (flow.Svm.IsEmpty && flow.Pvm.Head is { } p)
        {
            if (RegionEquals(p, frame, in region))
            {
                ReleaseOtherHead(flow);
                RemoveFlowIfEmpty(flow);
                return;
            }
            if (!_requested[(int)CheckpointReason.Mismatch])
                LastCause = $"mismatch on {Describe(flow.Key)}";
            Counters.mismatches++;
            Request(CheckpointReason.Mismatch);
        }
        if (Counters.heldBytes > 2 * _options.MaxHeldBytes)
        {
            Counters.svmDropped++;
            RemoveFlowIfEmpty(flow);
            return;
        }
        HeldFrame f = RentFrame(frame, now);
        f.Owner = flow;
        SetRegion(f, in region);
        flow.Svm.Enqueue(f);
        _svmHeld.Add(f);
    }

    /// <summary>
    /// A malformed SVM frame releases the oldest held malformed PVM frame when the two are byte-identical (and no SVM
    /// frame is queued before it); otherwise it is dropped (counted).
    /// </summary>
    private void SvmBad(ReadOnlySpan<byte> frame)
    {
        if (_flows.TryGetValue(BadFrameKey, out OtherFlow? bf) && bf.Svm.IsEmpty && bf.Pvm.Head is { } ph && ph.Key.SequenceEqual(frame))
        {
            ReleaseOtherHead(bf);
            RemoveFlowIfEmpty(bf);
        }
        else
        {
            Counters.svmDropped++;
        }
    }

    private void ReleaseOtherHead(OtherFlow flow)
    {
        HeldFrame h = flow.Pvm.Dequeue()!;
        _pvmHeld.Remove(h);
        Counters.matchedFrames++;
        ReleaseAndReturn(h);
    }

    private OtherFlow GetFlow(FlowKey key)
    {
        if (_flows.TryGetValue(key, out OtherFlow? f))
        {
            return f;
        }
        if (_flows.Count >= _options.MaxConnections)
        {
            Counters.connectionTableOverflows++;
            Request(CheckpointReason.QueueFull);
        }
        f = _flowPool.Count > 0 ? _flowPool.Pop() : new OtherFlow();
        f.Key = key;
        _flows.Add(key, f);
        Counters.flows = _flows.Count;
        return f;
    }

    private void RemoveFlowIfEmpty(OtherFlow f)
    {
        if (f.Pvm.IsEmpty && f.Svm.IsEmpty)
        {
            _flows.Remove(f.Key);
            _flowPool.Push(f);
            Counters.flows = _flows.Count;
        }
    }
}
