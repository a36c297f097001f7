using System.Buffers.Binary;

namespace Colo.Proxy.Fuzz;

/// <summary>Prints an input's configuration and records in words (same decoding as <see cref="Harness"/>).</summary>
internal static class Dump
{
    public static void Print(byte[] input, TextWriter w)
    {
        if (input.Length == 0)
        {
            w.WriteLine("empty input");
            return;
        }
        w.WriteLine($"config 0x{input[0]:x2}");
        int pos = 1, records = 0;
        while (pos < input.Length && records < Harness.MaxRecords)
        {
            records++;
            byte opByte = input[pos++];
            var op = (Harness.Op)(opByte & 7);
            int arg = opByte >> 3;
            if (op > Harness.Op.Both)
            {
                w.WriteLine($"{records,4}: {op} arg {arg}");
                continue;
            }
            int want = pos + 2 <= input.Length ? BinaryPrimitives.ReadUInt16BigEndian(input.AsSpan(pos, 2)) : int.MaxValue;
            pos = Math.Min(pos + 2, input.Length);
            int len = Math.Min(want, input.Length - pos);
            w.WriteLine($"{records,4}: {op} arg {arg} {Describe(input.AsSpan(pos, len))}");
            pos += len;
        }
    }

    private static string Describe(ReadOnlySpan<byte> f)
    {
        if (!PacketView.TryParse(f, out PacketView v, out BadFrameKind bad))
        {
            return $"{f.Length} bytes, malformed ({bad})";
        }
        string s = $"{f.Length} bytes, {v.Kind}";
        if (v.VlanCount > 0)
        {
            s += $" vlan x{v.VlanCount}";
        }
        if (v.IsTcp)
        {
            s += $" {v.SrcPort}->{v.DstPort} seq {v.Seq} ack {v.AckNumber} [{v.Flags}] payload {v.PayloadLength}";
        }
        else if (v.Kind is PacketKind.Udp or PacketKind.Udp6)
        {
            s += $" {v.SrcPort}->{v.DstPort} payload {v.PayloadLength}";
        }
        return s;
    }
}
