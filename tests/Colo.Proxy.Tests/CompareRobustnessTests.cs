using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

/// <summary>Bad frames through the engine and a flood of short connections (issue 4, items 4 and 5).</summary>
public class CompareRobustnessTests
{
    [Fact]
    public void FrameCutInsideTheIpHeader_CountedAsBad_EngineKeepsMatching()
    {
        var h = new Harness();
        byte[] good = Out(1000, 5000, ACK, Bytes("abc"));
        byte[] cut = good.AsSpan(0, 30).ToArray(); // Ethernet (14) + 16 of the 20 IPv4 header bytes
        h.Pvm(cut);
        h.Svm(cut.AsSpan(0, 25).ToArray());
        Assert.Equal(1, h.Engine.Counters.PvmBadFrames);
        Assert.Equal(1, h.Engine.Counters.SvmBadFrames);
        Assert.True(h.Engine.Counters.BadFramesByKind.Values.Sum() >= 2);
        Assert.Equal(0, h.Engine.Counters.InternalErrors);
        h.Pvm(good);
        h.Svm(Out(1000, 5000, ACK, Bytes("abc"), ipId: 77));
        Assert.Contains(good, h.Sink.Released);
    }

    [Fact]
    public void FloodOfShortConnections_TableStaysBounded_NothingLeaks_NoErrors()
    {
        const int limit = 1000;
        var h = new Harness(new CompareOptions { MaxConnections = limit, ClosedConnectionLinger = TimeSpan.FromSeconds(1) });
        int expectedReleased = 0;
        for (int i = 0; i < 20_000; i++)
        {
            ushort port = (ushort)(1024 + (i % 60_000));
            uint client = ClientIp + (uint)(i / 60_000);
            uint isn = (uint)(i * 7919);
            byte[] synAck = Tcp(GuestIp, GuestPort, client, port, isn, 1, SYN | ACK, default);
            h.Svm(synAck);
            h.Pvm(synAck);
            byte[] data = Tcp(GuestIp, GuestPort, client, port, isn + 1, 1, ACK | PSH, Bytes("reply"));
            h.Svm(data);
            h.Pvm(data);
            byte[] fin = Tcp(GuestIp, GuestPort, client, port, isn + 6, 1, ACK | FIN, default);
            h.Svm(fin);
            h.Pvm(fin);
            expectedReleased += 3;
            if (i % 100 == 0)
            {
                h.Time.Advance(TimeSpan.FromMilliseconds(200));
                h.Engine.OnTick();
            }
        }
        var c = h.Engine.Counters;
        Assert.Equal(expectedReleased, h.Sink.Released.Count);
        Assert.Equal(0, c.HeldFrames);
        Assert.Equal(0, c.InternalErrors);
        Assert.True(c.Connections <= limit, $"{c.Connections} connections tracked (limit {limit})");
        Assert.DoesNotContain(CheckpointReason.Mismatch, h.Sink.Requests);
        // Once everything is closed and the linger passed, the table empties.
        h.Time.Advance(TimeSpan.FromSeconds(5));
        h.Engine.OnTick();
        h.Time.Advance(TimeSpan.FromSeconds(5));
        h.Engine.OnTick();
        Assert.True(c.Connections < limit / 2, $"{c.Connections} connections left after the linger");
    }
}
